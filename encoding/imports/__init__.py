"""Readers of embeddings made elsewhere (`xalign import --format FMT`): each turns one format's files into an
`ImportSource`, the rows of image–caption pairs that `encoding.imports.writer` stores as a cache.

A reader is registered by name and called with the command's file flags as keyword arguments
(`reader(images=Path, texts=Path, metadata=Path)` for `pt`); the flags it takes are its parameters.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from encoding.errors import BadInput
from encoding.imports.embedding_files import RowArrays
from encoding.registry import Registry

IMPORTS = Registry("import format")


@dataclass(eq=False)
class ImportSource:
    """N rows, one per image–caption pair. The embeddings stay in their files (`RowArrays`, read a shard at a
    time); the text columns are held as compact Arrow arrays (their bytes plus 4 or 8 a row), labels as int64."""

    root: Path  # the directory of the first input
    inputs: list[Path]  # every file read, recorded in the cache's `dataset.inputs`
    images: RowArrays  # (N, D_img)
    texts: RowArrays  # (N, D_txt)
    image_ids: pa.Array  # (N,) string
    captions: pa.Array  # (N,) string
    image_paths: pa.Array  # (N,) string
    labels: np.ndarray | None  # (N,) int64
    locate: Callable[[int], str]  # 'FILE row R' of a row's image id, caption, path and label


def require_rows(path: Path, what: str, count: int, expected: int, source: str) -> None:
    """`BadInput` when `path`'s `what` has `count` rows where `source` has `expected`."""
    if count != expected:
        raise BadInput(f"{path}: {what} has {count} rows, but {source} has {expected}; expected one per pair")


def string_column(values, path: Path, key: str, locate: Callable[[int], str] | None = None, empty=True) -> pa.Array:
    """(N,) Arrow string array of `values` (a list, or an Arrow array of strings or integers); `BadInput`
    naming the row of a missing value, one a cache cannot store (a NUL character) or, unless `empty`, an empty one."""
    try:
        column = pa.array(values) if isinstance(values, list) else values
    except (pa.ArrowException, UnicodeEncodeError, OverflowError) as err:
        raise BadInput(f"{path}: '{key}' is not a column of strings ({str(err)[:200]})") from err
    if pa.types.is_integer(column.type) or pa.types.is_null(column.type):
        column = column.cast(pa.string())
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise BadInput(f"{path}: column '{key}' is {column.type}; expected strings (or integers)")
    if isinstance(column, pa.ChunkedArray) and column.num_chunks == 1:
        column = column.chunk(0)
    elif isinstance(column, pa.ChunkedArray):  # one array; 64-bit offsets when the text passes 2 GiB
        column = (column if column.nbytes < 1 << 31 else column.cast(pa.large_string())).combine_chunks()
    checks = [("is missing", pc.is_null(column)), ("holds a NUL character", pc.match_substring(column, "\x00"))]
    checks += [] if empty else [("is empty", pc.equal(column, ""))]
    for problem, mask in checks:
        if pc.any(mask).as_py():
            row = int(pc.index(mask, True).as_py())
            where = locate(row) if locate else f"{path} row {row}"
            raise BadInput(f"{where}: '{key}' {problem}; expected a {'nonempty ' if not empty else ''}string")
    return column


def empty_strings(n: int) -> pa.Array:
    return pa.repeat(pa.scalar("", pa.string()), n)


def read_source(kind: str, files: dict) -> ImportSource:
    """The `ImportSource` of format `kind` from the command's file flags (`files`: flag name → Path or None);
    a flag the format needs and lacks, or one it does not take, is `BadInput` naming both lists."""
    reader = IMPORTS.get(kind, key="--format")
    takes = list(inspect.signature(reader).parameters)
    given = sorted(name for name, value in files.items() if value is not None)
    missing, extra = [n for n in takes if files.get(n) is None], [n for n in given if n not in takes]
    if missing or extra:
        flags = " ".join(f"--{n}" for n in takes)
        wrong = f"needs {' '.join('--' + n for n in missing)}" if missing else f"takes no --{extra[0]}"
        raise BadInput(f"--format {kind} {wrong}; it takes exactly {flags}")
    return reader(**{name: Path(files[name]) for name in takes})


# Register the readers.
from encoding.imports import arrays, clip_retrieval, pt  # noqa: E402,F401
