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

from encoding.cache_checks import check_embeddings
from encoding.shard_rows import ShardRows
from pipeline.data.memory_budget import choose_stream
from pipeline.data.split_tensors import SplitTensors, read_inputs


@dataclass
class PooledBatch:
    """Pooled inputs of b pairs: a window as read (the cache's dtype) or a micro-batch cut from it (float32)."""

    image: torch.Tensor  # (b, D_img)
    text: torch.Tensor  # (b, D_txt)
    image_rows: torch.Tensor  # (b,) int64, split rows of the images (equal rows = the same image)

    def __len__(self) -> int:
        return len(self.image_rows)

    def part(self, rows: slice) -> "PooledBatch":
        """Pairs `rows` as float32 (a window stays in the cache's dtype until cut: half the memory for fp16)."""
        return PooledBatch(self.image[rows].float(), self.text[rows].float(), self.image_rows[rows])

    @staticmethod
    def cat(batches: list["PooledBatch"]) -> "PooledBatch":
        """The batches one after another, in the last one's dtype (a cut part back to the window's: exact)."""
        last = batches[-1]
        return PooledBatch(
            torch.cat([b.image.to(last.image.dtype) for b in batches]),
            torch.cat([b.text.to(last.text.dtype) for b in batches]),
            torch.cat([b.image_rows for b in batches]),
        )


class ShardEmbeddings:
    """A split's pooled embeddings read from the shards on request; rows are the split's rows."""

    streamed = True

    def __init__(self, split: SplitTensors):
        self.reader = ShardRows(split.cache)
        self.image_rows, self.caption_rows = split.cache_rows
        meta = split.cache.meta
        self.checks = {
            key: (
                lambda path, part, key=key, side=side: check_embeddings(
                    path, key, part, meta[f"{side}_model"]["dim"], f"{side}_model.dim"
                )
            )
            for key, side in (("images/embeddings", "image"), ("captions/embeddings", "text"))
        }

    def rows(self, key: str, cache_rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.reader.rows(key, cache_rows, check=self.checks[key]))

    def read(self, image_rows: torch.Tensor, caption_rows: torch.Tensor) -> PooledBatch:
        image = self.rows("images/embeddings", self.image_rows[image_rows.numpy()])
        text = self.rows("captions/embeddings", self.caption_rows[caption_rows.numpy()])
        return PooledBatch(image, text, image_rows)

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
