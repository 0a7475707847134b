"""A folder of images + a CSV or JSONL of (image path, caption) rows (`--dataset folder`).

CSV: a header with `image` (or `image_path`/`path`/`file_name`) and `caption` (or `text`) columns;
optional `label` and `split` columns. JSONL: one object per line with the same keys. Several rows
may name the same image (one caption each); paths are relative to `--root`. The image id is the
path relative to `--root` without its suffix. A row without an image and a caption as text (or a
JSONL line that is not a JSON object) is skipped and reported; a `label` that is not an integer or
a `split` that is not a string is `BadInput`.
"""

import csv
import io
import warnings
from pathlib import Path

from encoding.cache_checks import json_type
from encoding.datasets import DATASETS, ImageRecord, SkippedRow, read_text, require_dir, require_file
from encoding.errors import BadInput
from encoding.safe_load import parse_json, shown

IMAGE_KEYS = ("image", "image_path", "path", "file_name")
CAPTION_KEYS = ("caption", "text")


def _rows_csv(path: Path):
    """(line number, row dict) per data row; `BadInput` naming file:line when the CSV cannot be parsed."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        yield from enumerate(reader, start=2)
    except csv.Error as err:
        raise BadInput(f"{path}:{reader.line_num}: not valid CSV ({err})") from err


def _rows_jsonl(path: Path):
    """(line number, row dict) per non-blank line; a line that is not a JSON object gives `{"_error": why}`."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            try:
                row = parse_json(line, f"{path}:{number}")
            except BadInput as err:
                yield number, {"_error": str(err)}
                continue
            yield (
                number,
                row if isinstance(row, dict) else {"_error": f"expected a JSON object, found {json_type(row)}"},
            )


READERS = {".csv": _rows_csv, ".jsonl": _rows_jsonl, ".json": _rows_jsonl}


def _first(row: dict, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` whose value is a non-blank string."""
    return next((row[k] for k in keys if isinstance(row.get(k), str) and row[k].strip()), None)


def _label(value, where: str) -> int:
    """A class label from a CSV string or a JSON integer; `BadInput` naming file:line otherwise."""
    try:
        label = int(value) if isinstance(value, str) else value
    except ValueError:
        label = None
    if not isinstance(label, int) or isinstance(label, bool) or not -(2**63) <= label < 2**63:
        raise BadInput(f"{where}: label {shown(value)} is not an integer (expected a class number)")
    return label


def _image_id(image: str) -> str | None:
    """The image path without its suffix; None for a path with no file name ('.', '/')."""
    try:
        return str(Path(image).with_suffix(""))
    except ValueError:
        return None


@DATASETS.register("folder")
def read_folder(root: Path, annotations: Path | None = None) -> list[ImageRecord]:
    """Rows grouped by image, captions in file order; rows with no image or caption are reported."""
    root = require_dir(root, "image folder (--root)")
    annotations = require_file(annotations, "captions file (--annotations rows.csv or rows.jsonl)")
    if annotations.suffix not in READERS:
        raise BadInput(f"{annotations}: unknown captions format '{annotations.suffix}'; use one of {list(READERS)}")
    records: dict[str, ImageRecord] = {}
    for number, row in READERS[annotations.suffix](annotations):
        where = f"{annotations}:{number}"
        image, caption = _first(row, IMAGE_KEYS), _first(row, CAPTION_KEYS)
        image_id = None if image is None else _image_id(image)
        if image_id is None or caption is None:
            reason = f"row needs one of {IMAGE_KEYS} and one of {CAPTION_KEYS} as text: {shown(row)}"
            warnings.warn(SkippedRow("", where, reason), stacklevel=2)
            continue
        record = records.setdefault(image_id, ImageRecord(image_id=image_id, path=str(root / image)))
        record.captions.append(caption.strip())
        if row.get("label") not in (None, ""):
            record.label = _label(row["label"], where)
        if row.get("split") not in (None, ""):
            if not isinstance(row["split"], str):
                raise BadInput(f"{where}: split {shown(row['split'])} is not a string (expected e.g. 'train')")
            record.split = row["split"]
    return list(records.values())
