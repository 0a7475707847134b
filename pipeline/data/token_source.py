"""Token inputs of a split: the cached image and caption tokens of `xalign encode --tokens`, in memory or
streamed from the HDF5 shards.

A `TokenSource` gives the tokens of a split's rows: `images(rows)` → (k, T, D) float16 and
`captions(rows)` → (k, L, D') float16 with a (k, L) bool mask, captions padded to the longest of the
rows asked for. `InMemoryTokens` holds the whole split (read once); `ShardTokens` reads each request
from the shards, a contiguous slab per run of nearby rows (the chunked shuffle's runs), so its memory
is that of the request whatever the cache size. `token_source` picks one, as `data.stream` says or,
when it is null, by the memory budget (`memory_budget.choose_stream`).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encoding.cache import Cache, open_cache
from encoding.cache_checks import has_tokens, token_dataset
from encoding.errors import BadInput
from encoding.shard_rows import ShardRows
from pipeline.data.memory_budget import choose_stream
from pipeline.data.split_tensors import SplitTensors

DATASETS = {"images/tokens": (3, "f"), "captions/tokens": (3, "f"), "captions/token_mask": (2, "b")}  # ndim, kind


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

    def __len__(self) -> int:
        return len(self.image_rows)

    def part(self, rows: slice) -> "TokenBatch":
        """Pairs `rows`, captions trimmed to their longest."""
        return TokenBatch(self.image[rows], *trimmed(self.text[rows], self.text_mask[rows]), self.image_rows[rows])

    @staticmethod
    def cat(batches: list["TokenBatch"]) -> "TokenBatch":
        """The batches one after another, captions padded to the longest."""
        length = max(b.text.shape[1] for b in batches)
        text = [torch.nn.functional.pad(b.text, (0, 0, 0, length - b.text.shape[1])) for b in batches]
        mask = [torch.nn.functional.pad(b.text_mask, (0, length - b.text.shape[1])) for b in batches]
        return TokenBatch(
            torch.cat([b.image for b in batches]),
            torch.cat(text),
            torch.cat(mask),
            torch.cat([b.image_rows for b in batches]),
        )


def trimmed(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions cut to the longest real caption among them (at least one position)."""
    length = max(1, int(mask.sum(1).max())) if len(mask) else 1
    return tokens[:, :length], mask[:, :length]


@dataclass
class TokenWindow:
    """Tokens of a window of pairs as read from the shards: slabs in cache order and, per pair, its rows in them.
    `part(rows)` gathers pairs `rows` into a `TokenBatch` (one copy)."""

    image: np.ndarray  # (n', T, D) float16 slabs
    image_index: np.ndarray  # (k,) row of each pair's image in `image`
    text: np.ndarray  # (m', L, D') float16 slabs
    text_mask: np.ndarray  # (m', L) bool
    text_index: np.ndarray  # (k,) row of each pair's caption in `text`
    image_rows: torch.Tensor  # (k,) split rows of the images

    def __len__(self) -> int:
        return len(self.image_rows)

    def part(self, rows: slice) -> TokenBatch:
        image, text = self.image_index[rows], self.text_index[rows]
        captions = trimmed(torch.from_numpy(self.text[text]), torch.from_numpy(self.text_mask[text]))
        return TokenBatch(torch.from_numpy(self.image[image]), *captions, self.image_rows[rows])


class InMemoryTokens:
    """A split's tokens held in memory: (N, T, D) images, (M, L, D') captions padded to the split's longest."""

    streamed = False

    def __init__(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor):
        self.image, self.text, self.text_mask = image, text, text_mask

    def images(self, rows: torch.Tensor) -> torch.Tensor:
        return self.image[rows]

    def read(self, image_rows: torch.Tensor, caption_rows: torch.Tensor) -> TokenBatch:
        return TokenBatch(self.images(image_rows), *self.captions(caption_rows), image_rows)

    def captions(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return trimmed(self.text[rows], self.text_mask[rows])


class ShardTokens:
    """A split's tokens read from the shards on request; rows are the split's rows (as `SplitTensors` orders them)."""

    streamed = True

    def __init__(self, opened: Cache, split: SplitTensors):
        self.reader = ShardRows(opened, lambda f, path, key: token_dataset(f, path, key, *DATASETS[key]))
        self.image_rows, self.caption_rows = split.cache_rows

    def caption_window(self, rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m', L, D') token slabs, (m', L) their masks and (k,) each caption's row in them."""
        cache_rows = self.caption_rows[rows.numpy()]
        text, index = self.reader.window("captions/tokens", cache_rows)
        return text, self.reader.window("captions/token_mask", cache_rows)[0], index

    def read(self, image_rows: torch.Tensor, caption_rows: torch.Tensor) -> "TokenWindow":
        """The tokens of these pairs as read (slabs + indices); `part` gathers a micro-batch from them."""
        image = self.reader.window("images/tokens", self.image_rows[image_rows.numpy()])
        return TokenWindow(*image, *self.caption_window(caption_rows), image_rows)

    def images(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.reader.rows("images/tokens", self.image_rows[rows.numpy()], np.float16))

    def captions(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text, mask, index = self.caption_window(rows)
        return trimmed(torch.from_numpy(text[index]), torch.from_numpy(mask[index]))

    def close(self) -> None:
        self.reader.close()


def split_token_bytes(split: SplitTensors, shape: TokenShape) -> float:
    captions_per_image = len(split.caption_image_index) / max(1, len(split.image_ids))
    return len(split.image_ids) * shape.bytes_per_pair(captions_per_image)


def token_source(split: SplitTensors, stream: bool | None = None) -> InMemoryTokens | ShardTokens:
    """The tokens of `split` (read from `split.cache`, else from `split.cache_dir`): streamed when `stream`, or
    when `stream` is None and they exceed the memory budget (`choose_stream`); else read once into memory."""
    opened = open_cache(split.cache or split.cache_dir, verify=False)
    shape = token_shape(opened)
    shards = ShardTokens(opened, split)
    if choose_stream(f"tokens of {split.name or 'a split'}", split_token_bytes(split, shape), stream):
        return shards
    every = torch.arange(len(split.image_ids)), torch.arange(len(split.caption_image_index))
    image = shards.images(every[0])
    text, mask = shards.captions(every[1])
    shards.close()
    return InMemoryTokens(image, text, mask)
