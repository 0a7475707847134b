"""COCO captions (`--dataset coco`): `annotations/captions_{train,val}{2014,2017}.json` + the image folder.

The JSON holds `images` (`id`, `file_name`) and `annotations` (`image_id`, `caption`). Every caption
of an image is kept (most have 5, some 6 or 7). The split ('train' / 'val') comes from the
annotation file's name and is recorded for `xalign split --predefined`.
"""

import json
import re
import warnings
from pathlib import Path

from encoding.datasets import DATASETS, ImageRecord, SkippedRow, require_dir, require_file
from encoding.errors import BadInput

_SPLIT_IN_NAME = re.compile(r"(train|val|test)20\d\d")


def read_json(path: Path, keys: tuple[str, ...]) -> dict:
    """A JSON object with the top-level `keys`, or `BadInput` naming the file and what is missing."""
    try:
        payload = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not valid JSON ({err})") from err
    missing = [key for key in keys if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise BadInput(f"{path}: missing key(s) {missing}; expected {list(keys)}")
    return payload


def split_from_name(path: Path) -> str | None:
    """'captions_train2014.json' → 'train'; None when the name carries no split."""
    match = _SPLIT_IN_NAME.search(Path(path).name)
    return match.group(1) if match else None


@DATASETS.register("coco")
def read_coco(root: Path, annotations: Path | None = None) -> list[ImageRecord]:
    """One record per image that has at least one caption; captions in annotation order."""
    root = require_dir(root, "COCO image folder (--root)")
    annotations = require_file(annotations, "COCO captions JSON (--annotations captions_train2017.json)")
    payload = read_json(annotations, ("images", "annotations"))
    captions: dict[int, list[str]] = {}
    for row in payload["annotations"]:
        captions.setdefault(row["image_id"], []).append(row["caption"].strip())
    split = split_from_name(annotations)
    records = []
    for image in payload["images"]:
        texts = captions.pop(image["id"], [])
        path = str(root / image["file_name"])
        if not texts:
            warnings.warn(SkippedRow(str(image["id"]), path, "no captions in the annotation file"), stacklevel=2)
            continue
        records.append(ImageRecord(image_id=str(image["id"]), path=path, captions=texts, split=split))
    for image_id in sorted(captions):
        warnings.warn(SkippedRow(str(image_id), "", f"captions for an image not listed in {annotations}"), stacklevel=2)
    return records
