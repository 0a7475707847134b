"""Rows of a cache's datasets read from its HDF5 shards, without reading the rest.

`ShardRows(cache)` reads rows of a dataset (`images/embeddings`, `captions/text`, `captions/tokens`, ...)
given as cache rows (the row of an item over the shards in order): each run of nearby rows (at most
`RUN_GAP` apart) is one contiguous read straight into the result (`window`), so a chunked epoch order
or a scattered split costs one read per run instead of one per row, and the rows come out by one gather.
Rows of an uncompressed numeric dataset (contiguous, or chunked by whole rows) are read with `os.preadv`
at their byte offsets in the file (`RawLayout`), which releases the GIL while it copies, so a reader
thread does not hold up the training step; other datasets go through HDF5.
Shards are opened on first use and kept open until `close()`, at most half the process's open-file limit
at once (raised to its hard limit first), the least recently used closed beyond that: a window of a
chunked shuffle touches a run in many shards.
"""

import math
import os
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from encoding.cache_checks import open_shard
from encoding.errors import BadInput

RUN_GAP = 16  # wanted rows at most this far apart are read as one contiguous slab (h5py picking single rows costs
# more than reading a few rows too many); farther apart, as separate slabs
DatasetCheck = Callable[[h5py.File, Path, str], h5py.Dataset]


def open_shard_limit() -> int:
    """Shards a reader keeps open: half the open-file limit, after raising the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(8, (1 << 16 if soft == resource.RLIM_INFINITY else soft) // 2)


def plain_dataset(f: h5py.File, path: Path, key: str) -> h5py.Dataset:
    """Dataset `key` of an open shard; `BadInput` naming the shard when it is missing."""
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise BadInput(f"{path}: no dataset '{key}'; expected an xalign shard (re-encode)")
    return f[key]


@dataclass(frozen=True)
class RawLayout:
    """Where the rows of an uncompressed dataset lie in its file: chunks of `chunk_rows` whole rows (a contiguous
    dataset is one chunk), each at its byte offset."""

    chunk_rows: int
    row_bytes: int
    chunk_offsets: np.ndarray  # (chunks,) byte offset of each chunk in the file

    @staticmethod
    def of(dataset: h5py.Dataset) -> "RawLayout | None":
        """The layout of `dataset`, or None when its rows cannot be read raw (strings, filters, partial chunks)."""
        filtered = dataset.compression or dataset.shuffle or dataset.fletcher32 or dataset.scaleoffset is not None
        if dataset.dtype.kind not in "fbiu" or filtered or not dataset.shape[0]:
            return None
        row_bytes = dataset.dtype.itemsize * math.prod(dataset.shape[1:])
        if dataset.chunks is None:
            offset = dataset.id.get_offset()
            return None if offset is None else RawLayout(dataset.shape[0], row_bytes, np.array([offset]))
        chunk_rows = dataset.chunks[0]
        if dataset.chunks[1:] != dataset.shape[1:] or dataset.id.get_num_chunks() != -(-dataset.shape[0] // chunk_rows):
            return None
        offsets = np.zeros(dataset.id.get_num_chunks(), dtype=np.int64)
        for i in range(len(offsets)):
            info = dataset.id.get_chunk_info(i)
            if info.filter_mask:
                return None
            offsets[info.chunk_offset[0] // chunk_rows] = info.byte_offset
        return RawLayout(chunk_rows, row_bytes, offsets)

    def read_into(self, fd: int, first: int, out: np.ndarray) -> None:
        """Rows `first` .. `first + len(out)` into the C-contiguous `out`, a `preadv` per chunk touched."""
        buffer, row, at = memoryview(out.reshape(-1).view(np.uint8)), first, 0
        while row < first + len(out):
            chunk = row // self.chunk_rows
            stop = min(first + len(out), (chunk + 1) * self.chunk_rows)
            offset = int(self.chunk_offsets[chunk]) + (row - chunk * self.chunk_rows) * self.row_bytes
            end = at + (stop - row) * self.row_bytes
            while at < end:  # a read may return fewer bytes than asked
                got = os.preadv(fd, [buffer[at:end]], offset)
                if got <= 0:
                    raise OSError(f"short read at byte {offset}")
                at, offset = at + got, offset + got
            row = stop


class ShardRows:
    """Reads rows of one cache's datasets by cache row. `dataset(f, path, key)` opens (and checks) a dataset."""

    def __init__(self, cache, dataset: DatasetCheck = plain_dataset):
        self.files = [cache.dir / s["file"] for s in cache.shards]
        self.starts = {
            "images": np.cumsum([0] + [s["num_images"] for s in cache.shards]),
            "captions": np.cumsum([0] + [s["num_captions"] for s in cache.shards]),
        }
        self.check, self.max_open = dataset, open_shard_limit()
        self.handles: OrderedDict[int, h5py.File] = OrderedDict()
        self.datasets: dict[tuple[int, str], tuple[h5py.Dataset, RawLayout | None]] = {}
        self.fds: dict[int, int] = {}

    def dataset(self, shard: int, key: str) -> h5py.Dataset:
        return self.opened(shard, key)[0]

    def opened(self, shard: int, key: str) -> tuple[h5py.Dataset, RawLayout | None]:
        """Dataset `key` of `shard` (checked) and its raw layout; the shard's file opened (and a descriptor for raw
        reads) when it is not, the least recently used closed beyond `max_open`."""
        if shard in self.handles:
            self.handles.move_to_end(shard)
        else:
            if len(self.handles) >= self.max_open:
                self.close_shard(next(iter(self.handles)))
            self.handles[shard] = open_shard(self.files[shard])
            self.fds[shard] = os.open(self.files[shard], os.O_RDONLY)
        if (shard, key) not in self.datasets:
            dataset = self.check(self.handles[shard], self.files[shard], key)
            self.datasets[shard, key] = dataset, RawLayout.of(dataset)
        return self.datasets[shard, key]

    def close_shard(self, shard: int) -> None:
        self.datasets = {k: v for k, v in self.datasets.items() if k[0] != shard}
        self.handles.pop(shard).close()
        os.close(self.fds.pop(shard))

    def layout(self, shard: int, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """The trailing shape and dtype of dataset `key` in `shard`."""
        dataset = self.dataset(shard, key)
        return dataset.shape[1:], dataset.dtype

    def window(self, key: str, cache_rows: np.ndarray, check: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(W, index): the rows `cache_rows` of dataset `key` read a run of nearby rows at a time (a repeated row
        read once), and (k,) the position in W of each row asked, so `W[index]` is the rows in the order asked.
        A run at least half wanted goes straight into W, its gap rows included; a sparser one (e.g. one caption
        of five per image) is read into a scratch slab and only its wanted rows kept. Rows of a shard whose
        trailing dims are smaller than another's (captions padded to each shard's longest) are zero-padded.
        `check(path, slab)` sees each slab read with its shard file."""
        cache_rows = np.asarray(cache_rows, dtype=np.int64)
        if not len(cache_rows):
            template = self.dataset(0, key)
            return np.empty((0, *template.shape[1:]), dtype=template.dtype), cache_rows
        starts = self.starts[key.split("/")[0]]
        unique, inverse = np.unique(cache_rows, return_inverse=True)
        shards = np.searchsorted(starts, unique, side="right") - 1
        breaks = np.flatnonzero((np.diff(unique) > RUN_GAP) | (np.diff(shards) != 0)) + 1
        heads, tails = np.r_[0, breaks], np.r_[breaks, len(unique)] - 1
        firsts, lengths, counts = unique[heads], unique[tails] + 1 - unique[heads], tails + 1 - heads
        dense = 2 * counts >= lengths  # a run read whole into W; a sparse one through a scratch slab, picked
        kept = np.where(dense, lengths, counts)
        offsets, run_of = np.cumsum(kept) - kept, np.repeat(np.arange(len(heads)), counts)
        within = np.where(dense[run_of], unique - firsts[run_of], np.arange(len(unique)) - heads[run_of])
        index = (offsets[run_of] + within)[inverse]
        layouts = {int(shards[h]): self.layout(int(shards[h]), key) for h in heads}
        shapes, dtype = [shape for shape, _ in layouts.values()], next(iter(layouts.values()))[1]
        trailing = tuple(max(shape[i] for shape in shapes) for i in range(len(shapes[0])))
        out = np.empty((int(kept.sum()), *trailing), dtype=dtype)
        for run, (head, first, length, offset) in enumerate(zip(heads, firsts, lengths, offsets)):
            shard = int(shards[head])
            local = first - starts[shard]
            if dense[run]:
                target = out[offset : offset + length]
                self.read_run(shard, key, local, target)
            else:
                slab = np.empty((length, *trailing), dtype=dtype)
                self.read_run(shard, key, local, slab)
                target = out[offset : offset + counts[run]]
                target[:] = slab[unique[head : tails[run] + 1] - first]
            if check is not None:
                check(self.files[shard], target)
        return out, index

    def read_run(self, shard: int, key: str, first: int, out: np.ndarray) -> None:
        """Rows `first` .. `first + len(out)` of dataset `key` in `shard` into `out` (zero-padded in trailing dims
        the shard's rows lack): raw when its layout allows, else through HDF5."""
        dataset, raw = self.opened(shard, key)  # reopened here if closed meanwhile (`max_open`)
        rows = slice(first, first + len(out))
        if dataset.dtype.kind == "O":  # variable-length UTF-8 strings
            out[:] = np.asarray(dataset.asstr()[rows], dtype=object)
        elif dataset.shape[1:] != out.shape[1:]:
            out[:] = 0
            out[(slice(None), *(slice(0, n) for n in dataset.shape[1:]))] = dataset[rows]
        elif raw is not None:
            raw.read_into(self.fds[shard], first, out)
        else:
            dataset.read_direct(out, rows)

    def rows(self, key: str, cache_rows: np.ndarray, dtype=None, check: Callable | None = None) -> np.ndarray:
        """(k, ...) rows `cache_rows` of dataset `key` in the order asked (as `dtype` when given); `check` as for
        `window`."""
        slabs, index = self.window(key, cache_rows, check)
        return slabs[index] if dtype is None or slabs.dtype == object else slabs[index].astype(dtype, copy=False)

    def close(self) -> None:
        for shard in list(self.handles):
            self.close_shard(shard)
