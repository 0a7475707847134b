"""COCO captions (`--dataset coco`): `annotations/captions_{train,val}{2014,2017}.json` + the image folder.

The JSON holds `images` (`id`, `file_name`) and `annotations` (`image_id`, `caption`). Every caption
of an image is kept (most have 5, some 6 or 7). The split ('train' / 'val') comes from the
annotation file's name and is recorded for `xalign split --predefined`.
"""

import re
import warnings
from pathlib import Path

from encoding.cache_checks import describe, json_type
from encoding.datasets import DATASETS, ImageRecord, SkippedRow, read_text, require_dir, require_file
from encoding.errors import BadInput
from encoding.safe_load import parse_json

_SPLIT_IN_NAME = re.compile(r"(train|val|test)20\d\d")


_EXPECTED = {str: "a string", int: "an integer", list: "a list", (int, str): "an integer or a string"}
_REQUIRED = object()


def read_json(path: Path, keys: tuple[str, ...]) -> dict:
    """A JSON object with the top-level `keys`, or `BadInput` naming the file and what is missing."""
    payload = parse_json(read_text(path), str(path))
    missing = [key for key in keys if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise BadInput(f"{path}: missing key(s) {missing}; expected {list(keys)}")
    return payload


def objects(path: Path, items, key: str) -> list[dict]:
    """`items` (the value at `key`) when it is a list of JSON objects; `BadInput` naming file and key otherwise."""
    if not isinstance(items, list):
        raise BadInput(f"{path}: key '{key}' is {json_type(items)}, expected a list of objects")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadInput(f"{path}: key '{key}[{i}]' is {json_type(item)}, expected an object")
    return items


def field(path: Path, item: dict, where: str, key: str, kind, default=_REQUIRED):
    """`item[key]` when of type `kind` (`default` when absent, if given); `BadInput` naming file and key."""
    if key not in item:
        if default is _REQUIRED:
            raise BadInput(f"{path}: key '{where}.{key}' missing; expected {_EXPECTED[kind]}")
        return default
    value = item[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadInput(f"{path}: key '{where}.{key}' is {describe(value)}, expected {_EXPECTED[kind]}")
    return value


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
    captions: dict[int | str, list[str]] = {}
    for i, row in enumerate(objects(annotations, payload["annotations"], "annotations")):
        image_id = field(annotations, row, f"annotations[{i}]", "image_id", (int, str))
        captions.setdefault(image_id, []).append(field(annotations, row, f"annotations[{i}]", "caption", str).strip())
    split = split_from_name(annotations)
    records = []
    for i, image in enumerate(objects(annotations, payload["images"], "images")):
        image_id = field(annotations, image, f"images[{i}]", "id", (int, str))
        texts = captions.pop(image_id, [])
        path = str(root / field(annotations, image, f"images[{i}]", "file_name", str))
        if not texts:
            warnings.warn(SkippedRow(str(image_id), path, "no captions in the annotation file"), stacklevel=2)
            continue
        records.append(ImageRecord(image_id=str(image_id), path=path, captions=texts, split=split))
    for image_id in sorted(captions, key=str):  # ids may mix numbers and strings
        warnings.warn(SkippedRow(str(image_id), "", f"captions for an image not listed in {annotations}"), stacklevel=2)
    return records
