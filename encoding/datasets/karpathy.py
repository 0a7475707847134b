"""Karpathy splits (`--dataset karpathy`): `dataset_coco.json` / `dataset_flickr30k.json` / `dataset_flickr8k.json`.

`images[]` holds `filename`, optional `filepath` (COCO: 'train2014' / 'val2014'), `split`
('train', 'val', 'test', 'restval') and `sentences[].raw`. The image id is `cocoid` when present,
else the file stem (Flickr). `--root` is the folder the `filepath`/`filename` are relative to.
"""

import warnings
from pathlib import Path

from encoding.datasets import DATASETS, ImageRecord, SkippedRow, require_dir, require_file
from encoding.datasets.coco import field, objects, read_json


def _record(path: Path, image: dict, where: str, root: Path) -> ImageRecord:
    """The image's record (no captions when it has no sentences), its fields checked."""
    filename = field(path, image, where, "filename", str)
    cocoid = field(path, image, where, "cocoid", (int, str), default=None)
    sentences = objects(path, field(path, image, where, "sentences", list, default=[]), f"{where}.sentences")
    return ImageRecord(
        image_id=str(cocoid) if cocoid is not None else Path(filename).stem,
        path=str(root / field(path, image, where, "filepath", str, default="") / filename),
        captions=[field(path, s, f"{where}.sentences[{k}]", "raw", str).strip() for k, s in enumerate(sentences)],
        split=field(path, image, where, "split", str, default=None),
    )


@DATASETS.register("karpathy")
def read_karpathy(root: Path, annotations: Path | None = None) -> list[ImageRecord]:
    """One record per image with its Karpathy split recorded (restval is train for `xalign split`)."""
    root = require_dir(root, "image folder (--root)")
    annotations = require_file(annotations, "Karpathy JSON (--annotations dataset_coco.json)")
    records = []
    for i, image in enumerate(objects(annotations, read_json(annotations, ("images",))["images"], "images")):
        record = _record(annotations, image, f"images[{i}]", root)
        if not record.captions:
            warnings.warn(SkippedRow(record.image_id, record.path, "no sentences"), stacklevel=2)
            continue
        records.append(record)
    return records
