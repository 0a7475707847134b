"""The pairs tables of `--format arrays` (CSV or parquet) and clip-retrieval's metadata parquet, read with pyarrow.

Only the named columns are read; a missing one is `BadInput` naming the file, the column and the columns there.
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from encoding.errors import BadInput

BATCH_ROWS = 1 << 16
TEXT_COLUMNS = ("image_id", "caption", "image_path")  # read as text even when they look like numbers


def _columns_of(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    with open(path, "rb") as file:
        first = file.readline(1 << 20).decode("utf-8", "replace").rstrip("\r\n")
    return list(pa_csv.read_csv(pa.py_buffer(first.encode() + b"\n")).column_names) if first else []


def read_table(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> pa.Table:
    """The `required` columns of the CSV or parquet file `path`, and those of `optional` it has."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    if path.suffix not in (".csv", ".parquet"):
        raise BadInput(f"{path}: expected a .csv or .parquet file")
    try:
        present = _columns_of(path)
        missing = [c for c in required if c not in present]
        if missing:
            raise BadInput(f"{path}: column '{missing[0]}' missing; expected {list(required)} (found {present[:20]})")
        wanted = [*required, *(c for c in optional if c in present)]
        if path.suffix == ".parquet":  # in batches, one thread: reading holds little beyond the columns
            file = pq.ParquetFile(path, pre_buffer=False)
            schema = pa.schema([file.schema_arrow.field(c) for c in wanted])
            batches = file.iter_batches(BATCH_ROWS, columns=wanted, use_threads=False)
            return pa.Table.from_batches(batches, schema=schema)
        types = {c: pa.string() for c in TEXT_COLUMNS if c in wanted}
        options = pa_csv.ConvertOptions(include_columns=wanted, column_types=types, strings_can_be_null=False)
        return pa_csv.read_csv(path, convert_options=options)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not a readable {path.suffix[1:]} table ({str(err)[:300]})") from err
