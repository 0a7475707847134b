"""Rows of a cache's datasets read from its HDF5 shards, without reading the rest.

`ShardRows(cache)` reads rows of a dataset (`images/embeddings`, `captions/text`, `captions/tokens`, ...)
given as cache rows (the row of an item over the shards in order): each run of nearby rows (at most
`RUN_GAP` apart) is one contiguous read, so a chunked epoch order or a scattered split costs a few reads
per run instead of one per row. Shards are opened on first use and kept open until `close()`, at most
half the process's open-file limit at once (raised to its hard limit first), the least recently used
closed beyond that: a window of a chunked shuffle touches a run in many shards.
"""

import resource
from collections import OrderedDict
from collections.abc import Callable
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
        self.datasets: dict[tuple[int, str], h5py.Dataset] = {}

    def dataset(self, shard: int, key: str) -> h5py.Dataset:
        if shard in self.handles:
            self.handles.move_to_end(shard)
        else:
            if len(self.handles) >= self.max_open:
                oldest, handle = self.handles.popitem(last=False)
                self.datasets = {k: v for k, v in self.datasets.items() if k[0] != oldest}
                handle.close()
            self.handles[shard] = open_shard(self.files[shard])
        if (shard, key) not in self.datasets:
            self.datasets[shard, key] = self.check(self.handles[shard], self.files[shard], key)
        return self.datasets[shard, key]

    def parts(self, key: str, cache_rows: np.ndarray) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
        """Rows `cache_rows` of dataset `key`: (shard, array) parts, each of one run of sorted rows, and the
        position in `cache_rows` of each row read, in the order read."""
        starts = self.starts[key.split("/")[0]]
        order = np.argsort(cache_rows, kind="stable")
        wanted = cache_rows[order]
        shards = np.searchsorted(starts, wanted, side="right") - 1
        parts, positions = [], []
        for shard in np.unique(shards):
            picked = wanted[shards == shard] - starts[shard]
            dataset = self.dataset(int(shard), key)
            breaks = np.flatnonzero(np.diff(picked) > RUN_GAP) + 1
            for run in np.split(picked, breaks):  # runs of nearby rows: one contiguous read each
                first, last = int(run[0]), int(run[-1]) + 1
                if dataset.dtype.kind == "O":  # variable-length UTF-8 strings
                    slab = np.asarray(dataset.asstr()[first:last], dtype=object)
                else:
                    slab = dataset[first:last]
                contiguous = last - first == len(run) and bool((np.diff(run) == 1).all())  # the slab is the part
                parts.append((int(shard), slab if contiguous else slab[run - first]))
            positions.append(order[shards == shard])
        return parts, (np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64))

    def rows(self, key: str, cache_rows: np.ndarray, dtype=None, check: Callable | None = None) -> np.ndarray:
        """(k, ...) rows `cache_rows` of dataset `key` in the order asked (as `dtype` when given);
        `check(path, part)` sees each part read with the shard file it came from."""
        parts, positions = self.parts(key, np.asarray(cache_rows, dtype=np.int64))
        template = self.dataset(parts[0][0] if parts else 0, key)
        kind = object if template.dtype.kind == "O" else (dtype or template.dtype)
        out = np.empty((len(cache_rows), *template.shape[1:]), dtype=kind)
        at = 0
        for shard, part in parts:  # written into place part by part: one copy of the rows
            if check is not None:
                check(self.files[shard], part)
            out[positions[at : at + len(part)]] = part
            at += len(part)
        return out

    def close(self) -> None:
        self.datasets.clear()
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()
