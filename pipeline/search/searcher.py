"""Queries against a run's gallery: a text or an image through the run, the nearest items from its faiss index.

`Searcher.open(RUN)` opens the run object and its gallery for a split (building the default index first when
there is none, and saying so), refusing a stale one. A text goes through the cache's recorded text backbone (the
captions' prefix, L2 normalisation) and the run's text head, or its trained text tower; an image through the
image backbone and head. A score is the inner product of two L2-normalised embeddings: the entry of the
similarity matrix `xalign evaluate` ranks. A run that scores pairs (cross encoder, fused towers) re-ranks its
dual top `max(k, rerank_k)` across modalities (text → images, image → captions) with its match head, as evaluate
does, and the score is then the match logit.

A hit is `{rank, score, id, path, captions}`: for `target="images"` an image with all its captions; for
`"captions"` one caption, with the id and path of its image.
"""

import io
import logging
import mimetypes
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from encoding.datasets import open_image
from encoding.errors import BadInput
from pipeline.evaluation.evaluate import RunOnSplit, run_on_split
from pipeline.search import faiss_index
from pipeline.search.gallery import Gallery, build_gallery, current_gallery, gallery_dir

log = logging.getLogger(f"xalign.{__name__}")

MAX_QUERY_CHARS = 1_000  # longer than any caption a text backbone reads (they truncate at 64-512 tokens)
MAX_K = 1_000
MAX_UPLOAD_BYTES = 16 << 20
MAX_IMAGE_PIXELS = 64_000_000  # a larger upload is refused before it is decoded (a decompression bomb)
TARGETS = ("images", "captions")


def check_text(query) -> str:
    """The query stripped, or BadInput when it is not text, is empty, or is longer than `MAX_QUERY_CHARS`."""
    if not isinstance(query, str) or not query.strip():
        raise BadInput("query: empty; give some words to search for")
    if len(query) > MAX_QUERY_CHARS:
        raise BadInput(f"query: {len(query):,} characters; at most {MAX_QUERY_CHARS:,} are taken")
    return query.strip()


def decode_image(data: bytes, source: str) -> Image.Image:
    """The RGB image in `data` (an upload or a file named `source`), or BadInput: larger than `MAX_UPLOAD_BYTES`,
    more than `MAX_IMAGE_PIXELS` pixels, or not an image PIL reads."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadInput(f"{source}: {len(data):,} bytes; images up to {MAX_UPLOAD_BYTES >> 20} MB are taken")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise BadInput(f"{source}: {image.width}x{image.height} pixels; at most {MAX_IMAGE_PIXELS:,}")
                return image.convert("RGB")
    except BadInput:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadInput(f"{source}: not an image this tool can read ({type(err).__name__}: {err})") from err


class Searcher:
    """A run and its gallery on one split, answering queries (one at a time: queries are serialised)."""

    def __init__(self, opened: RunOnSplit, gallery: Gallery, run_dir: Path):
        self.opened, self.run, self.gallery, self.run_dir = opened, opened.run, gallery, Path(run_dir)
        self.rows_by_id = {image_id: row for row, image_id in enumerate(gallery.image_ids)}
        self.lock = threading.Lock()

    @classmethod
    def open(
        cls,
        run_dir: Path,
        split: str = "test",
        cache_dir: Path | None = None,
        device: str = "cpu",
        checkpoint="best.pt",
        allow_new_split=False,
    ) -> "Searcher":
        """The searcher of `run_dir` on `split`; builds the default index when there is none, refuses a stale one
        (`BadInput` naming what changed and both fingerprints)."""
        opened = run_on_split(run_dir, split, cache_dir, device, checkpoint, allow_new_split, verify=False)
        directory = gallery_dir(run_dir, split, cache_dir)
        gallery = current_gallery(directory, opened, split, f"rebuild it with `xalign index {run_dir} --force`")
        if gallery is None:
            log.info(
                f"{directory}: no index yet; building the default one (exact search up to "
                f"{faiss_index.EXACT_UP_TO:,} vectors) — `xalign index` builds others"
            )
            gallery = build_gallery(opened, directory, split, "default", None)
        return cls(opened, gallery, run_dir)

    def describe(self) -> dict:
        g = self.gallery
        return {
            "run": self.run_dir.name,
            "kind": self.run.kind,
            "split": self.opened.split,
            "images": g.num_images,
            "captions": len(g.captions),
            "index": g.record["images"]["factory"],
        }

    def check_k(self, k, target: str) -> int:
        if target not in TARGETS:
            raise BadInput(f"target '{target}': choose one of {', '.join(TARGETS)}")
        limit = min(MAX_K, self.gallery.size(target))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limit:
            raise BadInput(f"k {k}: expected 1 to {limit} (the gallery holds {self.gallery.size(target):,} {target})")
        return k

    def search_text(self, query: str, k: int = 10, target: str = "images") -> list[dict]:
        """The top `k` `target` items for a text query, best first."""
        text, k = check_text(query), self.check_k(k, target)
        with self.lock:
            vector = self.run.encode_texts([text])
            return self.hits(vector, k, target, text=text if target == "images" else None)

    def search_image(self, image: Image.Image, k: int = 10, target: str = "images") -> list[dict]:
        """The top `k` `target` items for a PIL image query, best first."""
        k = self.check_k(k, target)
        with self.lock:
            vector = self.run.encode_images([image])
            return self.hits(vector, k, target, image=image if target == "captions" else None)

    def hits(self, vector: torch.Tensor, k: int, target: str, text=None, image=None) -> list[dict]:
        """The hit rows of a (1, D) query embedding; a pair scorer re-ranks cross-modal queries (`text` against
        images, `image` against captions)."""
        rerank = self.run.scores_pairs and (text is not None or image is not None)
        depth = min(max(k, self.run.rerank_k or 0), self.gallery.size(target)) if rerank else k
        query = vector.detach().float().cpu().numpy().reshape(1, -1)
        scores, rows = faiss_index.search(self.gallery.indexes[target], query, depth)
        found = rows[0] >= 0
        scores, rows = scores[0][found], rows[0][found]
        if rerank:
            logits = (
                self.run.score_query(self.opened.data, torch.from_numpy(rows), text=text, image=image).cpu().numpy()
            )
            order = np.argsort(-logits, kind="stable")[:k]
            scores, rows = logits[order], rows[order]
        return [
            self.hit(rank, float(score), int(row), target) for rank, (score, row) in enumerate(zip(scores, rows), 1)
        ]

    def hit(self, rank: int, score: float, row: int, target: str) -> dict:
        g = self.gallery
        image = row if target == "images" else int(g.caption_image_index[row])
        captions = g.captions_by_image[image] if target == "images" else [g.captions[row]]
        return {"rank": rank, "score": score, "id": g.image_ids[image], "path": g.paths[image], "captions": captions}

    def image_path(self, image_id: str) -> str:
        """The stored path of a gallery image, or BadInput when `image_id` is not in the gallery."""
        if image_id not in self.rows_by_id:
            raise BadInput(f"image id '{image_id[:100]}': not in the gallery of split '{self.opened.split}'")
        return self.gallery.paths[self.rows_by_id[image_id]]

    def image_file(self, image_id: str) -> tuple[bytes, str]:
        """(bytes, mimetype) of a gallery image: the file as stored, or PNG for images inside dataset files."""
        path = self.image_path(image_id)
        if "://" not in path:
            if not Path(path).is_file():
                raise BadInput(f"image id '{image_id}': its file {path} is missing")
            return Path(path).read_bytes(), mimetypes.guess_type(path)[0] or "application/octet-stream"
        buffer = io.BytesIO()
        open_image(path).save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
