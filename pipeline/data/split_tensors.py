"""Cache splits: their index, their pooled embeddings once read (`read_inputs`, for the rows of each split only), and
the index permutations the engines draw batches from."""

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from encoding import cache, cache_checks
from encoding.cache import Cache, open_cache
from encoding.errors import BadInput
from encoding.shard_rows import ShardRows
from encoding.split import find_leaks

log = logging.getLogger(f"xalign.{__name__}")

GPU_MEMORY_SHARE = 0.5  # a split goes to the GPU when it takes at most this share of the free memory


@dataclass
class SplitTensors:
    """One split: its index in memory, its pooled embeddings and caption text in memory once read
    (`loaded`; a split left in the shards is streamed, `pipeline.data.pooled_source`). N images, M captions."""

    image: torch.Tensor | None  # (N, D_img) float32; None while left in the shards
    text: torch.Tensor | None  # (M, D_txt) float32; likewise
    caption_image_index: torch.Tensor  # (M,) int64, row of each caption's image
    image_ids: np.ndarray  # (N,) str
    captions: np.ndarray | None  # (M,) str; None while left in the shards
    image_paths: np.ndarray  # (N,) str
    labels: torch.Tensor | None = None  # (N,) int64
    cache_dir: Path | None = None  # the cache the split was read from
    cache_rows: tuple[np.ndarray, np.ndarray] | None = None  # (N,) image and (M,) caption rows in the cache
    cache: Cache | None = None  # the opened cache the split was read from (its metadata, shards, fingerprint)
    name: str = ""  # its name in splits.json ('all': the whole cache)

    def to(self, device) -> "SplitTensors":
        moved = {
            k: t.to(device)
            for k in ("image", "text", "caption_image_index", "labels")
            if (t := getattr(self, k)) is not None
        }
        return replace(self, **moved)

    @property
    def loaded(self) -> bool:
        return self.image is not None

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def dims(self) -> tuple[int, int]:
        if self.loaded:
            return self.image.shape[1], self.text.shape[1]
        return self.cache.meta["image_model"]["dim"], self.cache.meta["text_model"]["dim"]

    @property
    def nbytes(self) -> int:
        """Bytes of its tensors in memory (the embeddings as float32 once read, the caption index)."""
        dims, index = self.dims, self.caption_image_index
        return 4 * (self.num_images * dims[0] + len(index) * dims[1]) + index.numel() * index.element_size()


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


def _split(index: cache.CacheArrays, opened: Cache, rows: tuple[np.ndarray, np.ndarray], name: str) -> SplitTensors:
    """A split of the cache's index, its embeddings and caption text left in the shards."""
    return SplitTensors(
        image=None,
        text=None,
        caption_image_index=torch.from_numpy(index.caption_image_index),
        image_ids=index.image_ids,
        captions=None,
        image_paths=index.image_paths,
        labels=None if index.image_labels is None else torch.from_numpy(index.image_labels),
        cache_dir=opened.dir,
        cache_rows=rows,
        cache=opened,
        name=name,
    )


def read_inputs(split: SplitTensors, reader: ShardRows | None = None) -> SplitTensors:
    """`split` with its pooled embeddings (float32) and caption text read from the shards (`reader`, else a
    reader opened here); `BadInput` naming the shard on non-finite embeddings."""
    if split.loaded:
        return split
    own = reader is None
    reader = ShardRows(split.cache) if own else reader
    meta = split.cache.meta

    def embeddings(key: str, cache_rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(reader.rows(key, cache_rows, np.float32, cache_checks.embedding_check(meta, key)))

    try:
        image_rows, caption_rows = split.cache_rows
        image, text = embeddings("images/embeddings", image_rows), embeddings("captions/embeddings", caption_rows)
        captions = reader.rows("captions/text", caption_rows)
    finally:
        if own:
            reader.close()
    return replace(split, image=image, text=text, captions=captions)


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


def load_splits(
    source: Cache | Path, names: list[str], verify: bool = True, lazy: tuple[str, ...] = ()
) -> dict[str, SplitTensors]:
    """The named splits of `splits.json` (plus `all`, the whole cache) of an opened cache, or of the cache in
    directory `source` (opened here: `cache.open_cache(source, verify)`, `verify` hashing each shard). The
    index is read once; each split's embeddings and caption text are read for its rows only, except for the
    splits named in `lazy`, left in the shards (`read_inputs` reads them; training may stream them). The split
    file must be leak-free and name only ids of the cache (`check_split_file`).
    """
    opened = open_cache(source, verify)
    arrays = opened.arrays(inputs=False)
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
    reader, out = ShardRows(opened), {}
    try:
        for name in names:
            if name == "all":
                split = _split(arrays, opened, everything, name)
            else:
                split = _split(arrays.select(splits[name]), opened, arrays.rows_of(splits[name]), name)
            out[name] = split if name in lazy else read_inputs(split, reader)
    finally:
        reader.close()
    return out
