"""Token inputs of a split: the cached image and caption tokens of `xalign encode --tokens`, in memory or
streamed from the HDF5 shards.

A `TokenSource` gives the tokens of a split's rows: `images(rows)` → (k, T, D) float16 and
`captions(rows)` → (k, L, D') float16 with a (k, L) bool mask, captions padded to the longest of the
rows asked for. `InMemoryTokens` holds the whole split (read once); `ShardTokens` reads each request
from the shards, a contiguous slab per run of nearby rows (the chunked shuffle's runs), so its memory
is that of the request whatever the cache size. `token_source` picks one: in memory when the
split's tokens take at most `MEMORY_SHARE` of the available RAM, streamed otherwise (or as
`data.stream` says).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from encoding.cache import Cache, open_cache
from encoding.cache_checks import has_tokens, open_shard, token_dataset
from encoding.errors import BadInput
from pipeline.data.split_tensors import SplitTensors

MEMORY_SHARE = 0.5  # a split's tokens are held in memory when they take at most this share of the available RAM
DATASETS = {"images/tokens": (3, "f"), "captions/tokens": (3, "f"), "captions/token_mask": (2, "b")}  # ndim, kind
RUN_GAP = 16  # wanted rows at most this far apart are read as one contiguous slab (h5py picking single rows costs
# more than reading a few rows too many); farther apart, as separate slabs


@dataclass(frozen=True)
class TokenShape:
    """What a token cache's metadata records: T image tokens of D dims, captions of at most L tokens of D' dims."""

    image_tokens: int
    image_dim: int
    text_dim: int
    max_text_tokens: int

    def bytes_per_pair(self, captions_per_image: float) -> float:
        """Bytes of float16 tokens (and masks) per image with its captions."""
        text = self.max_text_tokens * (2 * self.text_dim + 1)
        return 2 * self.image_tokens * self.image_dim + captions_per_image * text


def token_shape(source: Cache | Path) -> TokenShape:
    """The token dims of an opened cache, or of the cache in directory `source` (opened unhashed), or BadInput
    saying to encode it with `--tokens`."""
    opened = open_cache(source, verify=False)
    if not has_tokens(opened.meta):
        raise BadInput(
            f"{opened.dir}: this cache holds no tokens; token heads need a cache encoded with "
            "`xalign encode ... --tokens`"
        )
    image, text = opened.meta["image_model"], opened.meta["text_model"]
    return TokenShape(image["num_tokens"], image["token_dim"], text["token_dim"], text["max_tokens"])


@dataclass
class TokenBatch:
    """A micro-batch of token inputs. b pairs; captions trimmed to the batch's longest."""

    image: torch.Tensor  # (b, T, D) float16
    text: torch.Tensor  # (b, L, D') float16
    text_mask: torch.Tensor  # (b, L) bool
    image_rows: torch.Tensor  # (b,) int64, split rows of the images (equal rows = the same image)

    def to(self, device) -> "TokenBatch":
        move = {"device": device, "non_blocking": True}
        return TokenBatch(
            self.image.to(**move), self.text.to(**move), self.text_mask.to(**move), self.image_rows.to(**move)
        )


def trimmed(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions cut to the longest real caption among them (at least one position)."""
    length = max(1, int(mask.sum(1).max())) if len(mask) else 1
    return tokens[:, :length], mask[:, :length]


class InMemoryTokens:
    """A split's tokens held in memory: (N, T, D) images, (M, L, D') captions padded to the split's longest."""

    streamed = False

    def __init__(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor):
        self.image, self.text, self.text_mask = image, text, text_mask

    def images(self, rows: torch.Tensor) -> torch.Tensor:
        return self.image[rows]

    def captions(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return trimmed(self.text[rows], self.text_mask[rows])


class ShardTokens:
    """A split's tokens read from the shards on request; rows are the split's rows (as `SplitTensors` orders them)."""

    streamed = True

    def __init__(self, opened: Cache, split: SplitTensors, shape: TokenShape):
        self.cache_dir, self.shape = opened.dir, shape
        self.files = [opened.dir / s["file"] for s in opened.shards]
        self.image_starts = np.cumsum([0] + [s["num_images"] for s in opened.shards])
        self.caption_starts = np.cumsum([0] + [s["num_captions"] for s in opened.shards])
        self.image_rows, self.caption_rows = split.cache_rows
        self.handles: dict[int, h5py.File] = {}

    def _dataset(self, shard: int, name: str) -> h5py.Dataset:
        if shard not in self.handles:
            self.handles[shard] = open_shard(self.files[shard])
        return token_dataset(self.handles[shard], self.files[shard], name, *DATASETS[name])

    def _read(self, name: str, cache_rows: np.ndarray, starts: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Rows `cache_rows` of dataset `name`: one array per shard touched (rows sorted within each), and the
        position in `cache_rows` of each row read, in the order read."""
        order = np.argsort(cache_rows, kind="stable")
        wanted = cache_rows[order]
        shards = np.searchsorted(starts, wanted, side="right") - 1
        parts, positions = [], []
        for shard in np.unique(shards):
            picked = wanted[shards == shard] - starts[shard]
            dataset = self._dataset(int(shard), name)
            breaks = np.flatnonzero(np.diff(picked) > RUN_GAP) + 1
            for run in np.split(picked, breaks):  # runs of nearby rows: one contiguous read each
                first, last = int(run[0]), int(run[-1]) + 1
                parts.append(dataset[first:last][run - first])
            positions.append(order[shards == shard])
        return parts, np.concatenate(positions)

    def images(self, rows: torch.Tensor) -> torch.Tensor:
        out = np.empty((len(rows), self.shape.image_tokens, self.shape.image_dim), dtype=np.float16)
        if len(rows):
            parts, positions = self._read("images/tokens", self.image_rows[rows.numpy()], self.image_starts)
            at = 0
            for part in parts:  # written into place shard by shard: one copy of the tokens, not three
                out[positions[at : at + len(part)]] = part
                at += len(part)
        return torch.from_numpy(out)

    def captions(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not len(rows):
            return torch.zeros(0, 1, self.shape.text_dim, dtype=torch.float16), torch.zeros(0, 1, dtype=torch.bool)
        cache_rows = self.caption_rows[rows.numpy()]
        tokens, positions = self._read("captions/tokens", cache_rows, self.caption_starts)
        masks, _ = self._read("captions/token_mask", cache_rows, self.caption_starts)
        length = max(part.shape[1] for part in tokens)
        text = np.zeros((len(rows), length, self.shape.text_dim), dtype=np.float16)
        mask = np.zeros((len(rows), length), dtype=bool)
        at = 0
        for part, part_mask in zip(tokens, masks):
            where = positions[at : at + len(part)]
            text[where, : part.shape[1]], mask[where, : part.shape[1]] = part, part_mask
            at += len(part)
        return trimmed(torch.from_numpy(text), torch.from_numpy(mask))

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (the whole physical memory where that is not readable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def split_token_bytes(split: SplitTensors, shape: TokenShape) -> float:
    captions_per_image = len(split.caption_image_index) / max(1, len(split.image_ids))
    return len(split.image_ids) * shape.bytes_per_pair(captions_per_image)


def token_source(split: SplitTensors, stream: bool | None = None) -> InMemoryTokens | ShardTokens:
    """The tokens of `split` (read from `split.cache`, else from `split.cache_dir`): streamed when `stream`, or
    when `stream` is None and they take more than MEMORY_SHARE of the available memory; else read once into
    memory."""
    opened = open_cache(split.cache or split.cache_dir, verify=False)
    shape = token_shape(opened)
    shards = ShardTokens(opened, split, shape)
    if stream is None:
        stream = split_token_bytes(split, shape) > MEMORY_SHARE * available_memory_bytes()
    if stream:
        return shards
    every = torch.arange(len(split.image_ids)), torch.arange(len(split.caption_image_index))
    image = shards.images(every[0])
    text, mask = shards.captions(every[1])
    shards.close()
    return InMemoryTokens(image, text, mask)
