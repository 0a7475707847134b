"""Cache splits as contiguous tensors: what the training engine and evaluation read."""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from encoding import cache
from encoding.errors import BadInput


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

    def to(self, device) -> "SplitTensors":
        moved = {k: getattr(self, k).to(device) for k in ("image", "text", "caption_image_index")}
        if self.labels is not None:
            moved["labels"] = self.labels.to(device)
        return replace(self, **moved)

    @property
    def dims(self) -> tuple[int, int]:
        return self.image.shape[1], self.text.shape[1]


def _tensors(arrays: cache.CacheArrays) -> SplitTensors:
    return SplitTensors(
        image=torch.from_numpy(np.ascontiguousarray(arrays.image_embeddings, dtype=np.float32)),
        text=torch.from_numpy(np.ascontiguousarray(arrays.caption_embeddings, dtype=np.float32)),
        caption_image_index=torch.from_numpy(arrays.caption_image_index),
        image_ids=arrays.image_ids,
        captions=arrays.caption_text,
        image_paths=arrays.image_paths,
        labels=None if arrays.image_labels is None else torch.from_numpy(arrays.image_labels),
    )


def load_splits(cache_dir: Path, names: list[str]) -> dict[str, SplitTensors]:
    """The named splits of `splits.json` (plus `all`, the whole cache), reading the cache once."""
    arrays = cache.load_cache(cache_dir)
    splits = None if set(names) <= {"all"} else cache.read_splits(cache_dir)
    out = {}
    for name in names:
        if name == "all":
            out[name] = _tensors(arrays)
            continue
        if name not in splits or not isinstance(splits[name], list):
            valid = sorted(k for k, v in splits.items() if isinstance(v, list))
            raise BadInput(f"{Path(cache_dir) / cache.SPLITS}: no split '{name}'; available: {', '.join(valid)}, all")
        if not splits[name]:
            raise BadInput(f"{Path(cache_dir) / cache.SPLITS}: split '{name}' is empty")
        out[name] = _tensors(arrays.select(splits[name]))
    return out
