"""Flickr30k (`--dataset flickr30k`): `results.csv` + the `flickr30k_images` folder.

`results.csv` is pipe-separated with a space after each pipe: `image_name| comment_number| comment`.
Malformed rows (the released file has one, a missing pipe) are skipped and reported, not fatal.
The image id is the file stem (e.g. '1000092795').
"""

import warnings
from pathlib import Path

from encoding.datasets import DATASETS, ImageRecord, SkippedRow, read_text, require_dir, require_file
from encoding.errors import BadInput

HEADER = ["image_name", "comment_number", "comment"]


def parse_row(line: str) -> tuple[str, str] | None:
    """(image file name, caption), or None for a malformed row."""
    fields = [field.strip() for field in line.split("|", 2)]
    if len(fields) != 3 or not fields[0] or not fields[2] or not fields[1].isdigit():
        return None
    return fields[0], fields[2]


@DATASETS.register("flickr30k")
def read_flickr30k(root: Path, annotations: Path | None = None) -> list[ImageRecord]:
    """One record per image; `annotations` defaults to `results.csv` next to or inside `root`."""
    root = require_dir(root, "Flickr30k image folder (--root)")
    if annotations is None:
        candidates = [root / "results.csv", root.parent / "results.csv"]
        annotations = next((c for c in candidates if c.is_file()), candidates[0])
    annotations = require_file(annotations, "Flickr30k results.csv (--annotations)")
    lines = read_text(annotations).splitlines()
    if not lines or [f.strip() for f in lines[0].split("|")] != HEADER:
        raise BadInput(f"{annotations}: first line must be the header '{'| '.join(HEADER)}'")
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = parse_row(line)
        if row is None:
            warnings.warn(SkippedRow("", f"{annotations}:{number}", f"malformed row: {line[:120]!r}"), stacklevel=2)
            continue
        captions.setdefault(row[0], []).append(row[1])
    return [
        ImageRecord(image_id=Path(name).stem, path=str(root / name), captions=texts) for name, texts in captions.items()
    ]
