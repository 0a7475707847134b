"""Cache splits as contiguous tensors, and the index permutations the training engine draws batches from."""

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from encoding import cache
from encoding.cache import Cache, open_cache
from encoding.errors import BadInput
from encoding.split import find_leaks

log = logging.getLogger(f"xalign.{__name__}")

GPU_MEMORY_SHARE = 0.5  # a split goes to the GPU when it takes at most this share of the free memory


@dataclass
class SplitTensors:
    """One split in memory. N images, M captions."""

    image: torch.Tensor  # (N, D_img) float32
    text: torch.Tensor  # (M, D_txt) float32
    caption_image_index: torch.Tensor  # (M,) int64, row of each caption's image
    image_ids: np.ndarray  # (N,) str
    captions: np.ndarray  # (M,) str
    image_paths: np.ndarray  # (N,) str
    labels: torch.Tensor | None = None  # (N,) int64
    cache_dir: Path | None = None  # the cache the split was read from
    cache_rows: tuple[np.ndarray, np.ndarray] | None = None  # (N,) image and (M,) caption rows in the cache
    cache: Cache | None = None  # the opened cache the split was read from (its metadata, shards, fingerprint)

    def to(self, device) -> "SplitTensors":
        moved = {k: getattr(self, k).to(device) for k in ("image", "text", "caption_image_index")}
        if self.labels is not None:
            moved["labels"] = self.labels.to(device)
        return replace(self, **moved)

    @property
    def dims(self) -> tuple[int, int]:
        return self.image.shape[1], self.text.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image, self.text, self.caption_image_index))


def fits_on(split: SplitTensors, device: torch.device) -> bool:
    """True off CUDA, and on CUDA when the split takes at most GPU_MEMORY_SHARE of the free memory."""
    return device.type != "cuda" or split.nbytes <= GPU_MEMORY_SHARE * torch.cuda.mem_get_info(device)[0]


class EpochSampler:
    """Each epoch's (image row, caption row) pairs, drawn from a generator seeded by (seed, epoch).

    `image`: every image that has a caption, once, with one of its captions at random.
    `caption`: every caption once, with its image. Index tensors live on `device`.
    """

    def __init__(self, caption_image_index: torch.Tensor, num_images: int, sampling: str, seed: int, device):
        index = caption_image_index.to(device)
        counts = torch.bincount(index, minlength=num_images)
        self.sampling, self.seed, self.device = sampling, seed, device
        self.caption_image_index = index
        self.images_with_captions = torch.nonzero(counts > 0).squeeze(1)
        self.counts, self.offsets = counts, torch.cumsum(counts, 0) - counts
        self.caption_order = torch.argsort(index, stable=True)

    def __len__(self) -> int:
        return len(self.images_with_captions) if self.sampling == "image" else len(self.caption_image_index)

    def generator(self, epoch: int, stream: int = 0) -> torch.Generator:
        """A CPU generator for (seed, epoch, stream); stream 0 orders the epoch, others serve augmentations."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 8 + stream)

    def order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(S,) image rows and (S,) caption rows of one epoch."""
        g = self.generator(epoch)
        if self.sampling == "caption":
            captions = torch.randperm(len(self.caption_image_index), generator=g).to(self.device)
            return self.caption_image_index[captions], captions
        rows = self.images_with_captions[torch.randperm(len(self.images_with_captions), generator=g).to(self.device)]
        pick = (torch.rand(len(rows), generator=g).to(self.device) * self.counts[rows]).long()
        return rows, self.caption_order[self.offsets[rows] + pick]


def _tensors(arrays: cache.CacheArrays, opened: Cache, rows: tuple[np.ndarray, np.ndarray]) -> SplitTensors:
    return SplitTensors(
        image=torch.from_numpy(np.ascontiguousarray(arrays.image_embeddings, dtype=np.float32)),
        text=torch.from_numpy(np.ascontiguousarray(arrays.caption_embeddings, dtype=np.float32)),
        caption_image_index=torch.from_numpy(arrays.caption_image_index),
        image_ids=arrays.image_ids,
        captions=arrays.caption_text,
        image_paths=arrays.image_paths,
        labels=None if arrays.image_labels is None else torch.from_numpy(arrays.image_labels),
        cache_dir=opened.dir,
        cache_rows=rows,
        cache=opened,
    )


def _sample(ids) -> str:
    """'N ids: [first few]' for messages."""
    ids = sorted(ids)
    return f"{len(ids)} ids: {ids[:5]}{' ...' if len(ids) > 5 else ''}"


def check_split_binding(opened: Cache, splits: dict) -> None:
    """Refuse a `splits.json` written for other cache contents (its `cache_fingerprint` differs)."""
    cache_dir, recorded = opened.dir, splits.get("cache_fingerprint")
    if recorded is None:
        log.warning(
            f"{cache_dir / cache.SPLITS} records no cache fingerprint; "
            f"bind it to this cache with `xalign split {cache_dir} --force`"
        )
    elif recorded != opened.fingerprint:
        raise BadInput(
            f"{cache_dir / cache.SPLITS}: written for cache fingerprint {recorded[:12]}, but the cache is now "
            f"{opened.fingerprint[:12]} (re-encoded or changed); write a new split with "
            f"`xalign split {cache_dir} --force`"
        )


def check_split_file(opened: Cache, splits: dict, arrays: cache.CacheArrays, names: list[str]) -> None:
    """Refuse a `splits.json` that leaks (ids shared by train/val/test, duplicate images across them, tuning
    outside train) or whose requested splits name ids the cache lacks."""
    cache_dir = opened.dir
    path = cache_dir / cache.SPLITS
    check_split_binding(opened, splits)
    known = set(arrays.image_ids)
    for name in names:
        unknown = set(splits[name]) - known
        if unknown:
            raise BadInput(
                f"{path}: split '{name}' names {_sample(unknown)} not in the cache; "
                f"write a split of this cache with `xalign split {cache_dir}`"
            )
    index = {"ids": arrays.image_ids, "caption_image_ids": arrays.caption_image_ids}
    if arrays.image_pixel_sha1 is not None:
        index["pixel_sha1"] = arrays.image_pixel_sha1
    problems = find_leaks(splits, index)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BadInput(
            f"{path}: the split is not leak-free: {'; '.join(problems[:3])}{more}; "
            f"`xalign split {cache_dir} --verify` lists every problem"
        )


def load_splits(source: Cache | Path, names: list[str], verify: bool = True) -> dict[str, SplitTensors]:
    """The named splits of `splits.json` (plus `all`, the whole cache) of an opened cache, or of the cache in
    directory `source` (opened here: `cache.open_cache(source, verify)`, `verify` hashing each shard), reading
    the shards once. The split file must be leak-free and name only ids of the cache (`check_split_file`).
    """
    opened = open_cache(source, verify)
    arrays = opened.arrays()
    wanted = [name for name in names if name != "all"]
    splits = opened.splits if wanted else {}
    for name in wanted:
        if name not in splits or not isinstance(splits[name], list):
            valid = sorted(k for k, v in splits.items() if isinstance(v, list))
            raise BadInput(f"{opened.dir / cache.SPLITS}: no split '{name}'; available: {', '.join(valid)}, all")
        if not splits[name]:
            raise BadInput(f"{opened.dir / cache.SPLITS}: split '{name}' is empty")
    if wanted:
        check_split_file(opened, splits, arrays, wanted)
    everything = (np.arange(len(arrays.image_ids)), np.arange(len(arrays.caption_image_ids)))
    return {
        name: _tensors(arrays, opened, everything)
        if name == "all"
        else _tensors(arrays.select(splits[name]), opened, arrays.rows_of(splits[name]))
        for name in names
    }
