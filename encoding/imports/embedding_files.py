"""Embedding matrices read from files row by row, never loaded whole: `.npy`, `.safetensors`, `.pt`.

`open_embeddings(path)` → `EmbeddingFile`, the (n, D) float rows of one file, memory-mapped. `take(rows)`
copies the given rows out as float32; `release()` hands the mapped pages back to the page cache (they stay
cached by the kernel but leave this process's resident set), so memory stays bounded by what one chunk or
shard reads, however large the file. `RowArrays` joins the files of one side (clip-retrieval's numbered
files) into one range of rows.
"""

import ctypes
import json
import mmap
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encoding.errors import BadInput

SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}  # BF16: raw bits, widened on take
SAFETENSORS_HEADER_BYTES = 100 << 20
TORCH_DTYPES = (torch.float16, torch.float32, torch.float64, torch.bfloat16)
PLAIN_TYPES = (torch.Tensor, list, tuple, dict, str, int, float, bool, type(None))
MADV_DONTNEED = 4  # Linux


@dataclass(eq=False)
class EmbeddingFile:
    """(n, D) float rows of one file: `array` a view of `mapping` (numpy), or a tensor (`.pt`; memory-mapped
    when `mapped`)."""

    path: Path
    array: np.ndarray | torch.Tensor
    mapping: mmap.mmap | None = None
    mapped: bool = False
    bfloat16_bits: bool = False  # a uint16 array holding bfloat16 bit patterns

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    def take(self, rows: np.ndarray | slice) -> np.ndarray:
        """(k, D) float32 copy of `rows` (indices sorted ascending, for sequential reads, or a slice)."""
        if isinstance(self.array, torch.Tensor):
            index = rows if isinstance(rows, slice) else torch.from_numpy(np.asarray(rows, dtype=np.int64))
            return self.array[index].to(torch.float32, copy=isinstance(rows, slice)).numpy()
        block = self.array[rows]
        if self.bfloat16_bits:
            return (block.astype(np.uint32) << 16).view(np.float32)
        return block.astype(np.float32, copy=isinstance(rows, slice))  # a slice is a view of the mapping

    def release(self) -> None:
        """Drop the pages read so far from this process's resident set (no-op for a tensor loaded into memory)."""
        if self.mapping is not None:
            self.mapping.madvise(mmap.MADV_DONTNEED)
        elif self.mapped:
            _drop_pages(self.array.untyped_storage())


def _drop_pages(storage) -> None:
    """madvise(MADV_DONTNEED) over a read-only, file-backed torch storage: its clean pages are re-read from the
    page cache on the next access. Only called on storages `torch.load(mmap=True)` mapped from a file."""
    start = storage.data_ptr() - storage.data_ptr() % mmap.PAGESIZE  # the mapping starts on a page boundary
    length = storage.data_ptr() + storage.nbytes() - start
    if length > 0:
        ctypes.CDLL(None).madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_DONTNEED)


def _refuse_dtype(path: Path, dtype, shape) -> None:
    raise BadInput(f"{path}: embeddings are {dtype} of shape {tuple(shape)}; expected a 2-D float array (n, D)")


def _mapped_array(path: Path, offset: int, dtype: np.dtype, shape: tuple, fortran: bool = False) -> EmbeddingFile:
    """`shape` values of `dtype` at byte `offset` of `path`, memory-mapped read-only."""
    count = int(np.prod(shape))
    if count == 0:
        raise BadInput(f"{path}: embeddings of shape {tuple(shape)} hold no rows; expected (n, D) with n, D >= 1")
    with open(path, "rb") as file:
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    if offset + count * dtype.itemsize > len(mapping):
        raise BadInput(f"{path}: file is truncated ({len(mapping)} bytes; the header describes {tuple(shape)})")
    flat = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset)
    array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    return EmbeddingFile(path, array, mapping)


def open_npy(path: Path) -> EmbeddingFile:
    """A `.npy` file, read without pickle (`np.load(mmap_mode="r", allow_pickle=False)` checks the header)."""
    try:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise BadInput(f"{path}: not a readable .npy array of numbers ({err})") from err
    offset, dtype, shape, fortran = header.offset, header.dtype, header.shape, header.flags.f_contiguous
    del header
    if dtype.kind != "f" or len(shape) != 2:
        _refuse_dtype(path, dtype, shape)
    return _mapped_array(path, offset, dtype, shape, fortran and len(shape) == 2 and shape[0] > 1)


def open_safetensors(path: Path) -> EmbeddingFile:
    """A `.safetensors` file holding exactly one 2-D float tensor (F16, F32, F64 or BF16)."""
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        if not 0 < size <= SAFETENSORS_HEADER_BYTES:
            raise BadInput(f"{path}: not a safetensors file (header length {size})")
        try:
            header = json.loads(file.read(size))
        except (ValueError, UnicodeDecodeError) as err:
            raise BadInput(f"{path}: not a safetensors file (header is not JSON: {err})") from err
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else {}
    if len(tensors) != 1:
        raise BadInput(f"{path}: holds {len(tensors)} tensors {sorted(tensors)[:10]}; expected exactly one")
    name, entry = next(iter(tensors.items()))
    entry = entry if isinstance(entry, dict) else {}
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise BadInput(f"{path}: tensor '{name}' has no valid 'data_offsets' in the header; not a safetensors file")
    if entry.get("dtype") not in SAFETENSORS_DTYPES or not isinstance(shape, list) or len(shape) != 2:
        _refuse_dtype(path, entry.get("dtype"), shape if isinstance(shape, list) else ())
    dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
    begin, end = offsets
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
        raise BadInput(f"{path}: tensor '{name}' has {end - begin} bytes, not what shape {shape} needs")
    embeddings = _mapped_array(path, 8 + size + begin, dtype, tuple(shape))
    embeddings.bfloat16_bits = entry["dtype"] == "BF16"
    return embeddings


def _check_plain(path: Path, value, depth: int = 0) -> None:
    """Refuse anything but tensors, lists, dicts, numbers and strings (and None) in a loaded `.pt`."""
    if not isinstance(value, PLAIN_TYPES) or depth > 32:
        raise BadInput(f"{path}: holds a {type(value).__name__}; expected only tensors, lists, dicts, numbers, strings")
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    else:
        items = value if isinstance(value, list | tuple) else []
    for item in items:
        _check_plain(path, item, depth + 1)


def open_pt(path: Path) -> EmbeddingFile:
    """A `.pt` file holding a 2-D float tensor, or a dict with exactly one 2-D tensor value ({"embeddings": T}).

    Loaded with `torch.load(weights_only=True)`, so a pickled object is refused without running it; memory-mapped
    (`mmap=True`) for the zip format `torch.save` writes, read into memory for the legacy format.
    """
    mapped = zipfile.is_zipfile(path)
    try:
        value = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")), "?")
        raise BadInput(
            f"{path}: refused without running it: not plain data (tensors, lists, dicts, numbers, strings) but a "
            f"pickled object or no torch file at all ({reason[:200]})"
        ) from err
    except Exception as err:  # torch raises RuntimeError, KeyError, EOFError, ... on a damaged file
        raise BadInput(f"{path}: not a readable torch file ({type(err).__name__}: {str(err)[:200]})") from err
    _check_plain(path, value)
    if isinstance(value, dict):
        tensors = {k: v for k, v in value.items() if isinstance(v, torch.Tensor) and v.ndim == 2}
        if len(tensors) != 1:
            raise BadInput(
                f"{path}: a dict with {len(tensors)} 2-D tensors {sorted(map(str, tensors))[:10]}; "
                "expected a tensor, or a dict with exactly one 2-D tensor value"
            )
        value = next(iter(tensors.values()))
    if not isinstance(value, torch.Tensor) or value.dtype not in TORCH_DTYPES or value.ndim != 2:
        _refuse_dtype(path, getattr(value, "dtype", type(value).__name__), getattr(value, "shape", ()))
    if value.numel() == 0:
        raise BadInput(f"{path}: embeddings of shape {tuple(value.shape)} hold no rows; expected (n, D)")
    return EmbeddingFile(path, value, mapped=mapped)


OPENERS = {".npy": open_npy, ".safetensors": open_safetensors, ".pt": open_pt}


def open_embeddings(path: Path, suffixes: tuple[str, ...]) -> EmbeddingFile:
    """The embeddings in `path`, by its suffix, which must be one of `suffixes`."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: embeddings file not found")
    if path.suffix not in suffixes:
        raise BadInput(f"{path}: expected a {' or '.join(suffixes)} file")
    return OPENERS[path.suffix](path)


def file_row(paths: list[Path], starts: np.ndarray, row: int) -> str:
    """'FILE row R' of global `row` over files whose rows start at `starts` (R counted from 0 in that file)."""
    i = int(np.searchsorted(starts, row, side="right")) - 1
    return f"{paths[i]} row {row - starts[i]}"


class RowArrays:
    """The rows of one side across files: file i holds the global rows `starts[i]:starts[i + 1]`."""

    def __init__(self, files: list[EmbeddingFile], what: str):
        dims = {f.shape[1] for f in files}
        if len(dims) > 1:
            odd = next(f for f in files if f.shape[1] != files[0].shape[1])
            raise BadInput(f"{odd.path}: {what} have dim {odd.shape[1]}, but {files[0].path} has {files[0].shape[1]}")
        self.files = files
        self.dim = files[0].shape[1]
        self.starts = np.cumsum([0] + [f.shape[0] for f in files])

    @property
    def num_rows(self) -> int:
        return int(self.starts[-1])

    def locate(self, row: int) -> str:
        """'FILE row R' of global `row` (R counted from 0 in that file)."""
        return file_row([f.path for f in self.files], self.starts, row)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """(k, D) float32 of global `rows`, in the given order; files are read in ascending row order (a run of
        consecutive rows as one slice)."""
        rows = np.asarray(rows, dtype=np.int64)
        order = None if bool((np.diff(rows) > 0).all()) else np.argsort(rows, kind="stable")
        ordered = rows if order is None else rows[order]
        cuts = np.searchsorted(ordered, self.starts)
        parts = []
        for f, a, b, start in zip(self.files, cuts, cuts[1:], self.starts):
            local = ordered[a:b] - start
            if len(local):
                run = local[-1] - local[0] + 1 == len(local) and bool((np.diff(local) == 1).all())
                parts.append(f.take(slice(local[0], local[-1] + 1) if run else local))
        block = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.empty((0, self.dim), np.float32)])
        if order is None:
            return block
        out = np.empty_like(block)
        out[order] = block
        return out

    def chunks(self, rows: int):
        """(first global row, (k, D) float32 block) over every row, `rows` at a time; pages released after each."""
        for f, start in zip(self.files, self.starts):
            for a in range(0, f.shape[0], rows):
                yield int(start) + a, f.take(slice(a, a + rows))
                f.release()

    def release(self) -> None:
        for f in self.files:
            f.release()
