"""A folder of images + a CSV or JSONL of (image path, caption) rows (`--dataset folder`).

CSV: a header with `image` (or `image_path`/`path`/`file_name`) and `caption` (or `text`) columns;
optional `label` and `split` columns. JSONL: one object per line with the same keys. Several rows
may name the same image (one caption each); paths are relative to `--root`. The image id is the
path relative to `--root` without its suffix.
"""

import csv
import json
import warnings
from pathlib import Path

from encoding.datasets import DATASETS, ImageRecord, SkippedRow, require_dir, require_file
from encoding.errors import BadInput

IMAGE_KEYS = ("image", "image_path", "path", "file_name")
CAPTION_KEYS = ("caption", "text")


def _rows_csv(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        yield from enumerate(csv.DictReader(f), start=2)


def _rows_jsonl(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, {"_error": str(err)}


READERS = {".csv": _rows_csv, ".jsonl": _rows_jsonl, ".json": _rows_jsonl}


def _first(row: dict, keys: tuple[str, ...]):
    return next((row[k] for k in keys if row.get(k) not in (None, "")), None)


@DATASETS.register("folder")
def read_folder(root: Path, annotations: Path | None = None) -> list[ImageRecord]:
    """Rows grouped by image, captions in file order; rows with no image or caption are reported."""
    root = require_dir(root, "image folder (--root)")
    annotations = require_file(annotations, "captions file (--annotations rows.csv or rows.jsonl)")
    if annotations.suffix not in READERS:
        raise BadInput(f"{annotations}: unknown captions format '{annotations.suffix}'; use one of {list(READERS)}")
    records: dict[str, ImageRecord] = {}
    for number, row in READERS[annotations.suffix](annotations):
        image, caption = _first(row, IMAGE_KEYS), _first(row, CAPTION_KEYS)
        if image is None or caption is None:
            reason = f"row needs one of {IMAGE_KEYS} and one of {CAPTION_KEYS}: {str(row)[:120]}"
            warnings.warn(SkippedRow("", f"{annotations}:{number}", reason), stacklevel=2)
            continue
        image_id = str(Path(image).with_suffix(""))
        record = records.setdefault(image_id, ImageRecord(image_id=image_id, path=str(root / image)))
        record.captions.append(str(caption).strip())
        if row.get("label") not in (None, ""):
            record.label = int(row["label"])
        record.split = row.get("split") or record.split
    return list(records.values())
