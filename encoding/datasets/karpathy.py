"""Karpathy splits (`--dataset karpathy`): `dataset_coco.json` / `dataset_flickr30k.json` / `dataset_flickr8k.json`.

`images[]` holds `filename`, optional `filepath` (COCO: 'train2014' / 'val2014'), `split`
('train', 'val', 'test', 'restval') and `sentences[].raw`. The image id is `cocoid` when present,
else the file stem (Flickr). `--root` is the folder the `filepath`/`filename` are relative to.
"""

import warnings
from pathlib import Path

from encoding.datasets import DATASETS, ImageRecord, SkippedRow, require_dir, require_file
from encoding.datasets.coco import read_json


def _image_id(image: dict) -> str:
    return str(image["cocoid"]) if "cocoid" in image else Path(image["filename"]).stem


@DATASETS.register("karpathy")
def read_karpathy(root: Path, annotations: Path | None = None) -> list[ImageRecord]:
    """One record per image with its Karpathy split recorded (restval is train for `xalign split`)."""
    root = require_dir(root, "image folder (--root)")
    annotations = require_file(annotations, "Karpathy JSON (--annotations dataset_coco.json)")
    records = []
    for image in read_json(annotations, ("images",))["images"]:
        path = str(root / image.get("filepath", "") / image["filename"])
        texts = [s["raw"].strip() for s in image.get("sentences", [])]
        if not texts:
            warnings.warn(SkippedRow(_image_id(image), path, "no sentences"), stacklevel=2)
            continue
        records.append(ImageRecord(image_id=_image_id(image), path=path, captions=texts, split=image.get("split")))
    return records
