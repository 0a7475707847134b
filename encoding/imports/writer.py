"""`xalign import` as a library call: `import_cache(ImportRequest(...))` stores embeddings made elsewhere as a cache.

Images are numbered in order of first appearance in the rows (Arrow's dictionary encoding of the image ids);
shard s holds images `s * shard_size ...` with all their captions, each image's captions in row order. Held in
memory for the whole run: the text columns (`ImportSource`) and the rows grouped by image (int64), some 50 bytes
a row with COCO-like captions. Embeddings are read a chunk or a shard at a time and their mapped pages released
after each, so the rest of memory is bounded by a shard whatever the input's size (`xalign bench import`).
A refusal while writing (rows of one image that disagree) leaves an incomplete cache, never a complete one.

Before anything is written, one pass over every vector refuses NaN, inf and zero vectors (naming the file and
row); a side with any vector whose norm is off 1 by more than `NORM_TOLERANCE` is L2-normalised as a whole and
recorded as `normalized_on_import: true` in its model entry. While writing, the rows of one image must carry the
same image embedding: each within `SAME_IMAGE_TOLERANCE` (max abs difference of the unit vectors, fp16
precision) of the image's first row, else `BadInput` naming the id and both rows. Rerunning the same request
resumes at the missing shards, or, on a complete cache, reads nothing and returns its metadata.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from encoding import cache
from encoding.errors import BadInput
from encoding.imports import ImportSource, read_source
from encoding.imports.embedding_files import RowArrays
from encoding.runtime import library_versions

NORM_TOLERANCE = 1e-3
SAME_IMAGE_TOLERANCE = 1e-3
CHUNK_BYTES = 64 << 20  # float32 bytes per block of the checking pass
SAMPLE_BYTES = 1 << 20  # hashed at each end of an input file
FILE_FLAGS = ("images", "texts", "metadata", "pairs", "root")
log = logging.getLogger(f"xalign.{__name__}")


@dataclass(frozen=True, kw_only=True)
class ImportRequest:
    """One `xalign import` run: a field per command-line flag, with the command line's defaults."""

    format: str
    out: Path
    image_model: str
    text_model: str
    images: Path | None = None
    texts: Path | None = None
    metadata: Path | None = None
    pairs: Path | None = None
    root: Path | None = None
    shard_size: int = 10000  # images per shard
    dtype: str = "float16"  # stored embedding dtype

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        if self.shard_size < 1:
            raise BadInput("--shard-size must be >= 1")
        if self.dtype not in ("float16", "float32"):
            raise BadInput(f"--dtype {self.dtype}: choose float16 or float32")

    def files(self) -> dict:
        return {name: getattr(self, name) for name in FILE_FLAGS}


@dataclass(frozen=True)
class Groups:
    """The rows grouped by image: image k (first-appearance order) owns rows `order[starts[k]:starts[k + 1]]`."""

    ids: pa.Array  # (n_images,) string
    order: np.ndarray  # (N,) int64
    starts: np.ndarray  # (n_images + 1,) int64

    @classmethod
    def of(cls, image_ids: pa.Array) -> "Groups":
        encoded = pc.dictionary_encode(image_ids)
        numbers = encoded.indices.to_numpy()
        counts = np.bincount(numbers, minlength=len(encoded.dictionary))
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(encoded.dictionary, np.argsort(numbers, kind="stable"), starts)

    @property
    def num_images(self) -> int:
        return len(self.ids)


def sample_sha256(path: Path) -> str:
    """sha256 of the first and the last MiB of `path` (the whole file when smaller): a cheap input identity."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        digest.update(file.read(SAMPLE_BYTES))
        file.seek(max(SAMPLE_BYTES, Path(path).stat().st_size - SAMPLE_BYTES))
        digest.update(file.read(SAMPLE_BYTES))
    return digest.hexdigest()


def dataset_entry(request: ImportRequest, source: ImportSource) -> dict:
    inputs = [
        {"path": str(p.resolve()), "bytes": p.stat().st_size, "sample_sha256": sample_sha256(p)} for p in source.inputs
    ]
    return {"kind": "import", "format": request.format, "root": str(source.root), "inputs": inputs, "limit": None}


def model_entry(spec: str, dim: int, dtype: str, normalized_on_import: bool) -> dict:
    return {
        "spec": spec,
        "dim": dim,
        "library": "import",
        "weights": None,
        "dtype": dtype,
        "normalized": True,
        "normalized_on_import": normalized_on_import,
    }


def needs_normalizing(side: RowArrays, what: str, progress) -> bool:
    """Whether any vector's norm is off 1 by more than `NORM_TOLERANCE`; `BadInput` at the first row holding NaN
    or inf or a zero vector (a value whose square overflows float32 counts as inf)."""
    off = False
    for start, block in side.chunks(max(1, CHUNK_BYTES // (4 * side.dim))):
        squares = np.einsum("ij,ij->i", block, block)
        for problem, bad in (("NaN or inf", ~np.isfinite(squares)), ("a zero vector", squares == 0)):
            if bad.any():
                where = side.locate(start + int(np.argmax(bad)))
                raise BadInput(f"{where}: the {what} embedding is {problem}; expected finite, nonzero vectors")
        off = off or bool((np.abs(np.sqrt(squares) - 1) > NORM_TOLERANCE).any())
        progress.update(len(block))
    return off


def unit(vectors: np.ndarray) -> np.ndarray:
    """(k, D) rows divided by their L2 norms, in place."""
    vectors /= np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    return vectors


def check_same_image(source: ImportSource, ids: list, rows: np.ndarray, vectors: np.ndarray, counts, firsts) -> None:
    """`BadInput` naming the id and two rows when an image's rows (`rows`, grouped: `counts` per image, starting
    at `firsts`) carry image embeddings (`vectors`, unit) more than `SAME_IMAGE_TOLERANCE` apart."""
    first = np.repeat(firsts, counts)  # position of each row's image's first row
    for a in range(0, len(rows), 8192):
        gap = np.abs(vectors[a : a + 8192] - vectors[first[a : a + 8192]]).max(axis=1)
        bad = np.flatnonzero(gap > SAME_IMAGE_TOLERANCE)
        if len(bad):
            row, owner = rows[a + bad[0]], rows[first[a + bad[0]]]
            image = np.searchsorted(np.cumsum(counts), a + bad[0], side="right")
            raise BadInput(
                f"{source.locate(row)}: image '{ids[image]}' has an image embedding differing from its row {owner} "
                f"({source.images.locate(owner)}) by {gap[bad[0]]:.4f}; expected the same vector for every row "
                f"of one image (within {SAME_IMAGE_TOLERANCE})"
            )


def image_labels(source: ImportSource, ids: list, rows: np.ndarray, counts, firsts) -> np.ndarray | None:
    """(n,) int64 label of each image, from its rows; `BadInput` when the rows of one image disagree."""
    if source.labels is None:
        return None
    labels = source.labels[rows]
    bad = np.flatnonzero(labels != np.repeat(labels[firsts], counts))
    if len(bad):
        image = np.searchsorted(np.cumsum(counts), bad[0], side="right")
        raise BadInput(
            f"{source.locate(rows[bad[0]])}: label {labels[bad[0]]} differs from label {labels[firsts[image]]} of "
            f"row {rows[firsts[image]]} for image '{ids[image]}'; expected one label per image"
        )
    return labels[firsts]


def shard_images(source: ImportSource, ids: list, rows: np.ndarray, counts, firsts, normalize: bool):
    """(n, D_img) float32 image embeddings of a shard, the first row of each image, checked against its other rows."""
    if len(rows) == len(counts):  # one row per image: nothing to compare
        images = source.images.take(rows)
    else:
        vectors = source.images.take(rows)
        images = vectors[firsts]
        check_same_image(source, ids, rows, unit(vectors), counts, firsts)
    source.images.release()
    return unit(images) if normalize else images


def build_shard(source: ImportSource, groups: Groups, index: int, shard_size: int, normalize: tuple) -> cache.ShardData:
    """Shard `index`: its images and all their captions, read from the files."""
    a, b = index * shard_size, min((index + 1) * shard_size, groups.num_images)
    rows = groups.order[groups.starts[a] : groups.starts[b]]
    counts = np.diff(groups.starts[a : b + 1])
    firsts = np.cumsum(counts) - counts
    ids = groups.ids[a:b].to_pylist()
    images = shard_images(source, ids, rows, counts, firsts, normalize[0])
    texts = source.texts.take(rows)
    source.texts.release()
    return cache.ShardData(
        image_ids=ids,
        image_embeddings=images,
        image_paths=source.image_paths.take(pa.array(rows[firsts])).to_pylist(),
        caption_image_ids=np.repeat(np.asarray(ids, dtype=object), counts).tolist(),
        caption_embeddings=unit(texts) if normalize[1] else texts,
        caption_text=source.captions.take(pa.array(rows)).to_pylist(),
        image_labels=image_labels(source, ids, rows, counts, firsts),
    )


def requested(request: ImportRequest, source: ImportSource) -> dict:
    """The header entries fixed before any vector is read (checked against an existing cache first)."""
    models = {f"{side}_model.spec": getattr(request, f"{side}_model") for side in ("image", "text")}
    dtypes = {f"{side}_model.dtype": request.dtype for side in ("image", "text")}
    return {"dataset": dataset_entry(request, source), "shard_size": request.shard_size, **models, **dtypes}


def normalization(source: ImportSource) -> tuple[bool, bool]:
    """(normalise the images?, the texts?): the checking pass over every vector, with a progress bar."""
    sides = ((source.images, "image"), (source.texts, "text"))
    with tqdm(total=2 * source.images.num_rows, unit="row", desc="check", disable=None) as progress:
        flags = tuple(needs_normalizing(side, what, progress) for side, what in sides)
    for (_, what), flag in zip(sides, flags):
        if flag:
            log.info(f"{what} embeddings are not unit length (norm off 1 by > {NORM_TOLERANCE}); L2-normalising them")
    return flags


def import_cache(request: ImportRequest) -> dict:
    """Write (or finish writing) the cache `request.out` → its metadata. See the module docstring."""
    source = read_source(request.format, request.files())
    asked = requested(request, source)
    if (request.out / cache.METADATA).exists():
        meta = cache.read_metadata(request.out)
        cache.check_header(request.out, meta, asked)
        if meta["complete"]:
            log.info(f"{request.out}: already complete; nothing to import")
            return meta
    groups = Groups.of(source.image_ids)
    pa.default_memory_pool().release_unused()  # the buffers of reading the tables, back to the system
    normalize = normalization(source)
    num_shards = -(-groups.num_images // request.shard_size)
    header = {
        "dataset": asked["dataset"],
        "shard_size": request.shard_size,
        "tokens": None,
        "image_model": model_entry(request.image_model, source.images.dim, request.dtype, normalize[0]),
        "text_model": {**model_entry(request.text_model, source.texts.dim, request.dtype, normalize[1]), "prefix": ""},
        "num_shards": num_shards,
        "versions": library_versions(),
    }
    cache.init_metadata(request.out, header)
    todo = [i for i in range(num_shards) if i not in cache.finished_shards(request.out)]
    for index in tqdm(todo, unit="shard", desc="import", disable=None):
        data = build_shard(source, groups, index, request.shard_size, normalize)
        cache.record_shard(request.out, cache.write_shard(request.out, index, data, dtype=request.dtype))
        counts = f"{len(data.image_ids)} images, {len(data.caption_text)} captions"
        log.info(f"shard {index + 1}/{num_shards} written ({counts})")
    return cache.read_metadata(request.out)
