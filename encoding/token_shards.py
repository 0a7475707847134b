"""The token datasets of a shard (`xalign encode --tokens`): writing them, and reading row ranges for training.

A token cache's shard holds, besides the pooled columns:
- `images/tokens` (n, T, D) float16: the image backbone's spatial tokens, T = metadata `image_model.num_tokens`
- `captions/tokens` (m, L, D') float16: the text backbone's final hidden states, real tokens first, zeros at
  padding, L = the shard's longest caption (<= `text_model.max_tokens`)
- `captions/token_mask` (m, L) bool: True at real tokens
Each is chunked by whole rows, so a contiguous row range is a few chunk reads. `cache.load_cache` never reads
them (a COCO token cache is ~10 GB); it checks their shapes only. Read them here, a range at a time.
"""

import contextlib
from pathlib import Path

import h5py
import numpy as np

from encoding.cache_checks import check_token_datasets, has_tokens, open_shard, token_dataset
from encoding.errors import BadInput

ROWS_PER_CHUNK = 64
__all__ = ["has_tokens", "read_caption_tokens", "read_image_tokens", "shard_token_shapes", "write_tokens"]


def _row_chunks(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Chunks of up to `ROWS_PER_CHUNK` whole rows; None (contiguous) for an empty dataset."""
    return None if 0 in shape else (min(shape[0], ROWS_PER_CHUNK), *shape[1:])


def write_tokens(f: h5py.File, image_tokens: np.ndarray, caption_tokens: np.ndarray, caption_mask: np.ndarray):
    """Create the three token datasets in an open shard being written (uncompressed, row-chunked)."""
    for key, values in (
        ("images/tokens", np.asarray(image_tokens, dtype=np.float16)),
        ("captions/tokens", np.asarray(caption_tokens, dtype=np.float16)),
        ("captions/token_mask", np.asarray(caption_mask, dtype=bool)),
    ):
        f.create_dataset(key, data=values, chunks=_row_chunks(values.shape))


def shard_token_shapes(path: Path, entry: dict, meta: dict) -> dict[str, tuple[int, ...]]:
    """{dataset: shape} of a shard's token datasets, checked against its metadata entry (reads no token data).

    `entry` is the shard's item of `meta["shards"]`; `BadInput` names the shard and dataset on a mismatch.
    """
    with open_shard(Path(path)) as f:
        return check_token_datasets(f, Path(path), entry, meta)


@contextlib.contextmanager
def _opened(shard: Path | h5py.File):
    """(open file, its path): an open shard as is, or a path opened read-only for the block."""
    if isinstance(shard, h5py.File):
        yield shard, Path(shard.filename)
    else:
        with open_shard(Path(shard)) as f:
            yield f, Path(shard)


def _rows(data: h5py.Dataset, start: int, stop: int | None) -> slice:
    stop = data.shape[0] if stop is None else stop
    if not 0 <= start <= stop <= data.shape[0]:
        raise IndexError(f"rows {start}:{stop} of '{data.name}' in {data.file.filename}: it has {data.shape[0]} rows")
    return slice(start, stop)


def read_image_tokens(shard: Path | h5py.File, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows `start:stop` of `images/tokens` → (k, T, D) float16. `shard`: a path, or a shard opened with h5py."""
    with _opened(shard) as (f, path):
        data = token_dataset(f, path, "images/tokens", 3, "f")
        return data[_rows(data, start, stop)]


def read_caption_tokens(shard: Path | h5py.File, start: int = 0, stop: int | None = None):
    """Rows `start:stop` of `captions/tokens` and `captions/token_mask` → ((k, L, D') float16, (k, L) bool)."""
    with _opened(shard) as (f, path):
        tokens = token_dataset(f, path, "captions/tokens", 3, "f")
        mask = token_dataset(f, path, "captions/token_mask", 2, "b")
        if mask.shape != tokens.shape[:2]:
            raise BadInput(
                f"{path}: dataset 'captions/token_mask' has shape {mask.shape}, expected {tokens.shape[:2]} "
                "as 'captions/tokens'"
            )
        rows = _rows(tokens, start, stop)
        return tokens[rows], mask[rows]
