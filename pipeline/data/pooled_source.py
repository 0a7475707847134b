"""Pooled inputs of a train split: its embeddings held in memory, or streamed from the HDF5 shards.

`training_inputs(split, data.stream)` decides (`memory_budget.choose_stream`) and gives either the split
with its embeddings read (`read_inputs`; the trainer gathers batches from those tensors, on the GPU when
they fit) or the split as it is with a `ShardEmbeddings` source, which reads the rows of each request
from the shards (one contiguous read per run of nearby rows, `encoding.shard_rows`) in the cache's dtype,
checking them finite, so memory holds a window of rows whatever the cache size.
"""

from dataclasses import dataclass

import numpy as np
import torch

from encoding.cache_checks import embedding_check
from encoding.shard_rows import ShardRows
from pipeline.data.memory_budget import choose_stream
from pipeline.data.split_tensors import SplitTensors, read_inputs


@dataclass
class PooledBatch:
    """A micro-batch of pooled inputs. b pairs."""

    image: torch.Tensor  # (b, D_img) float32
    text: torch.Tensor  # (b, D_txt) float32
    image_rows: torch.Tensor  # (b,) int64, split rows of the images (equal rows = the same image)

    def __len__(self) -> int:
        return len(self.image_rows)

    @staticmethod
    def cat(batches: list["PooledBatch"]) -> "PooledBatch":
        return PooledBatch(*(torch.cat([getattr(b, k) for b in batches]) for k in ("image", "text", "image_rows")))


@dataclass
class PooledWindow:
    """Pooled inputs of a window of pairs as read: slabs in cache order (the cache's dtype: half the memory of
    float32 for fp16) and, per pair, its rows in them. `part(rows)` gathers a float32 `PooledBatch`."""

    image: np.ndarray  # (n', D_img) slabs
    image_index: np.ndarray  # (k,) row of each pair's image in `image`
    text: np.ndarray  # (m', D_txt) slabs
    text_index: np.ndarray  # (k,) row of each pair's caption in `text`
    image_rows: torch.Tensor  # (k,) split rows of the images

    def __len__(self) -> int:
        return len(self.image_rows)

    def part(self, rows: slice) -> PooledBatch:
        image = torch.from_numpy(self.image[self.image_index[rows]]).float()
        text = torch.from_numpy(self.text[self.text_index[rows]]).float()
        return PooledBatch(image, text, self.image_rows[rows])


class ShardEmbeddings:
    """A split's pooled embeddings read from the shards on request; rows are the split's rows."""

    streamed = True

    def __init__(self, split: SplitTensors):
        self.reader = ShardRows(split.cache)
        self.image_rows, self.caption_rows = split.cache_rows
        keys = ("images/embeddings", "captions/embeddings")
        self.checks = {key: embedding_check(split.cache.meta, key) for key in keys}

    def read(self, image_rows: torch.Tensor, caption_rows: torch.Tensor) -> PooledWindow:
        key = "images/embeddings"
        image = self.reader.window(key, self.image_rows[image_rows.numpy()], self.checks[key])
        key = "captions/embeddings"
        text = self.reader.window(key, self.caption_rows[caption_rows.numpy()], self.checks[key])
        return PooledWindow(*image, *text, image_rows)

    def close(self) -> None:
        self.reader.close()


def training_inputs(split: SplitTensors, stream: bool | None) -> tuple[SplitTensors, ShardEmbeddings | None]:
    """(`split` with its embeddings in memory, None) or (`split`, the source streaming them), as `stream` says or,
    when it is None, by the memory budget. A split passed with its embeddings already read stays in memory
    unless `stream` is true."""
    if split.loaded and stream is None:
        return split, None
    if choose_stream(f"embeddings of split '{split.name}'", split.nbytes, stream):
        return split, ShardEmbeddings(split)
    return read_inputs(split), None
