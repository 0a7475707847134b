"""A run's search gallery: a split's images and captions embedded through the run, a faiss index over each, and
what a hit returns (image paths made absolute, `located`), under `RUN/index/<split>/`
(`RUN/index/<cache name>-<split>/` for another cache of the same backbones).

Files: `images.faiss` and `captions.faiss` (ids are row numbers), `gallery.json` (image ids, paths, caption texts,
each caption's image row) and `index.json`: what built it (the run's config and checkpoint sha256, the cache and
split fingerprints) and, per index, its kind, factory, vector count, build time, size and recall@10 against exact
search. A build is written to a temporary directory and renamed into place whole, so an interrupted build leaves
the previous index (or none), never half of one. A gallery is stale when the run's config or checkpoint, or its
cache or split, changed since it was built: it is then refused (`BadInput` naming both fingerprints).
"""

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from encoding.cache_checks import sha256_of
from encoding.errors import BadInput
from encoding.fingerprints import sha256_json
from encoding.safe_load import load_json
from pipeline.evaluation.evaluate import RunOnSplit
from pipeline.search import faiss_index

log = logging.getLogger(f"xalign.{__name__}")

INDEX_DIR = "index"
RECORD = "index.json"
ITEMS = "gallery.json"
SIDES = {"images": "images.faiss", "captions": "captions.faiss"}  # --target → its index file
IDENTITY = ("config_sha256", "checkpoint_sha256", "cache_fingerprint", "splits_fingerprint")


def gallery_dir(run_dir: Path, split: str, cache_dir: Path | None = None) -> Path:
    """`RUN/index/<split>`, or `RUN/index/<cache name>-<split>` for a gallery of another cache (`--cache`)."""
    return Path(run_dir) / INDEX_DIR / (split if cache_dir is None else f"{Path(cache_dir).name}-{split}")


def identity(opened: RunOnSplit, split: str) -> dict:
    """What a gallery of `opened.run` on `split` is bound to: the run's config and checkpoint, the data's
    fingerprints."""
    run, data = opened.run, opened.provenance
    return {
        "split": split,
        "cache": data["cache"],
        "config_sha256": sha256_json(run.config.to_dict()),
        "checkpoint": run.checkpoint.name,
        "checkpoint_sha256": sha256_of(run.checkpoint),
        "cache_fingerprint": data["cache_fingerprint"],
        "splits_fingerprint": data["splits_fingerprint"],
    }


def stale_because(record: dict, current: dict) -> str | None:
    """Why a gallery recorded as `record` no longer matches the run and data `current` (None: it matches)."""
    what = {
        "config_sha256": "the run's config",
        "checkpoint_sha256": f"the run's checkpoint {current['checkpoint']}",
        "cache_fingerprint": f"the cache {current['cache']}",
        "splits_fingerprint": "the split",
    }
    for key in IDENTITY:
        if record.get(key) != current[key]:
            then, now = str(record.get(key))[:12], current[key][:12]
            return f"{what[key]} changed since it was built ({key} {then} then, {now} now)"
    return None


@dataclass
class Gallery:
    """An opened gallery: `record` (index.json), the items a hit row returns, and the two faiss indexes."""

    directory: Path
    record: dict
    image_ids: list[str]
    paths: list[str]
    captions: list[str]
    caption_image_index: np.ndarray  # (M,) each caption's image row
    indexes: dict  # "images" / "captions" → faiss index

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def size(self, target: str) -> int:
        return self.num_images if target == "images" else len(self.captions)

    @cached_property
    def captions_by_image(self) -> list[list[str]]:
        """Each image's captions, in the cache's order."""
        by_image: list[list[str]] = [[] for _ in self.image_ids]
        for text, image in zip(self.captions, self.caption_image_index.tolist()):
            by_image[image].append(text)
        return by_image


def open_gallery(directory: Path) -> Gallery:
    """The gallery in `directory` (written by `build_gallery`), or BadInput naming what is missing."""
    directory = Path(directory)
    if not (directory / RECORD).is_file():
        raise BadInput(f"{directory}: no search index; build it with `xalign index RUN --split {directory.name}`")
    record = load_json(directory / RECORD)
    items = load_json(directory / ITEMS)
    if not isinstance(record, dict) or not isinstance(items, dict) or not all(k in record for k in IDENTITY):
        raise BadInput(f"{directory}: {RECORD} or {ITEMS} is not an index this project wrote")
    indexes = {side: faiss_index.read_index(directory / name, record[side]) for side, name in SIDES.items()}
    rows = np.asarray(items["caption_image_index"], dtype=np.int64)
    return Gallery(directory, record, items["image_ids"], items["paths"], items["captions"], rows, indexes)


def current_gallery(directory: Path, opened: RunOnSplit, split: str, way_out: str) -> Gallery | None:
    """The gallery in `directory` when it was built from `opened`'s run and data; None when there is none;
    BadInput naming what changed (both fingerprints) and `way_out` when it is stale."""
    if not (Path(directory) / RECORD).is_file():
        return None
    gallery = open_gallery(directory)
    if reason := stale_because(gallery.record, identity(opened, split)):
        raise BadInput(f"{directory}: the index is stale: {reason}; {way_out}")
    return gallery


def build_gallery(opened: RunOnSplit, directory: Path, split: str, kind: str, max_memory: int | None) -> Gallery:
    """Embed `opened.data` through its run, index both sides (each tuned and measured with the other side's
    embeddings as held-out queries) and write the gallery to `directory`, replacing whatever was there."""
    started = time.perf_counter()
    image, text, caption_image_index = (t.detach().float().cpu().numpy() for t in opened.run.embed_split(opened.data))
    built = {
        "images": faiss_index.build_index(image, kind, max_memory, queries=text),
        "captions": faiss_index.build_index(text, kind, max_memory, queries=image),
    }
    record = {
        **identity(opened, split),
        "run_kind": opened.run.kind,
        "requested": {"index": kind, "max_memory": max_memory},
        **{side: b.info for side, b in built.items()},
        "build_s": round(time.perf_counter() - started, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    data = opened.data
    items = {
        "image_ids": [str(i) for i in data.image_ids],
        "paths": [located(str(p), opened.cache.dir) for p in data.image_paths],
        "captions": [str(c) for c in data.captions],
        "caption_image_index": caption_image_index.astype(np.int64).tolist(),
    }
    staging = directory.with_name(f".{directory.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for side, name in SIDES.items():
        faiss_index.write_index(built[side].index, staging / name)
    (staging / ITEMS).write_text(json.dumps(items))
    (staging / RECORD).write_text(json.dumps(record, indent=2))
    replace_directory(staging, directory)
    return open_gallery(directory)


def located(path: str, cache_dir: Path) -> str:
    """An image path as an absolute one: a relative path (as `xalign encode` stores it, relative to where it ran)
    is looked up from the working directory, then from the cache and the two directories above it (a cache at
    `DIR/pretrain_encoded/<name>` encoded from DIR); kept as it is when found nowhere, or when it is a
    `SCHEME://` path inside a dataset file."""
    if "://" in path or Path(path).is_absolute():
        return path
    for base in (Path.cwd(), cache_dir, *Path(cache_dir).resolve().parents[:2]):
        if (Path(base) / path).is_file():
            return str((Path(base) / path).resolve())
    return path


def replace_directory(new: Path, target: Path) -> None:
    """Put directory `new` at `target`; an old `target` is moved aside first and deleted only after."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
