"""Dataset readers: each turns a dataset's real on-disk format into a list of `ImageRecord`s.

A reader is registered by name (`--dataset KIND`) and called as
`reader(root: Path, annotations: Path | None, **options) -> list[ImageRecord]`.
"""

import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from encoding.errors import BadInput
from encoding.registry import Registry
from encoding.safe_load import DATA_BYTES, read_capped

DATASETS = Registry("dataset")


@dataclass
class ImageRecord:
    """One image and its captions, as the dataset defines them."""

    image_id: str
    path: str
    captions: list[str] = field(default_factory=list)
    label: int | None = None
    split: str | None = None  # the dataset's own split, for `xalign split --predefined`
    shard_group: str | None = None  # records of one group (webdataset: a tar) never share a cache shard with another


def require_dir(path: Path, what: str) -> Path:
    if not Path(path).is_dir():
        raise BadInput(f"{path}: {what} not found (expected a directory)")
    return Path(path)


def require_file(path: Path | None, what: str) -> Path:
    if path is None or not Path(path).is_file():
        raise BadInput(f"{path}: {what} not found (expected a file)")
    return Path(path)


def read_text(path: Path) -> str:
    """The whole file as text; `BadInput` naming the file when it is larger than `DATA_BYTES` or not UTF-8."""
    return read_capped(path, DATA_BYTES)


IMAGE_SOURCES: Registry = Registry("image source scheme")


def open_image(path: str):
    """The RGB PIL image at `path`: a file, or `SCHEME://...` for images stored inside dataset files
    (e.g. CIFAR-100 pickles), decoded by the reader registered for SCHEME in `IMAGE_SOURCES`."""
    from PIL import Image

    scheme, sep, rest = str(path).partition("://")
    if sep:
        return IMAGE_SOURCES.get(scheme, key=f"image path {path}")(rest).convert("RGB")
    with Image.open(path) as image:
        return image.convert("RGB")


class SkippedRow(UserWarning):
    """A reader's non-fatal rejection of an annotation row or image (malformed row, no captions)."""

    def __init__(self, image_id: str, path: str, reason: str):
        super().__init__(f"{path or image_id}: skipped, {reason}")
        self.entry = {"image_id": image_id, "path": path, "reason": reason}


def unstorable(text: str) -> str | None:
    """What keeps `text` out of an HDF5 UTF-8 string (a NUL character, an unpaired surrogate), or None."""
    if "\x00" in text:
        return f"a NUL character at position {text.index(chr(0))}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"an unpaired surrogate at position {err.start}"
    return None


def _escaped(text: str) -> str:
    """`text` printable and storable: NUL and unpaired surrogates as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def storable(records: list[ImageRecord]) -> list[ImageRecord]:
    """`records` less the captions, and images, a cache cannot store, each rejection a `SkippedRow` warning:
    a caption with a NUL or an unpaired surrogate, an image id or path with one, an image left without captions."""
    kept = []
    for record in records:
        why = unstorable(record.image_id) or unstorable(record.path)
        if why:
            reason = f"image id or path holds {why}"
            warnings.warn(SkippedRow(_escaped(record.image_id), _escaped(record.path), reason), stacklevel=2)
            continue
        captions = []
        for number, caption in enumerate(record.captions, start=1):
            why = unstorable(caption)
            if why:
                warnings.warn(SkippedRow(record.image_id, record.path, f"caption {number} holds {why}"), stacklevel=2)
            else:
                captions.append(caption)
        if record.captions and not captions:
            warnings.warn(SkippedRow(record.image_id, record.path, "no caption left to store"), stacklevel=2)
            continue
        record.captions = captions
        kept.append(record)
    return kept


def read_dataset(
    kind: str, root: Path, annotations: Path | None = None, skipped: list | None = None, **options
) -> list[ImageRecord]:
    """Records of dataset `kind`, sorted by image id (within each `shard_group`) so shard contents are deterministic.

    `options` are the reader's own keyword options (e.g. `pairs` for cifar100, `num_images` for
    demo); one the reader does not take is `BadInput`. Rows the reader rejects, and captions and images a
    cache cannot store (`storable`), are `SkippedRow` warnings, appended to `skipped` as `{image_id, path,
    reason}` when a list is given, else shown as warnings.
    """
    reader = DATASETS.get(kind, key="--dataset")
    accepted = list(inspect.signature(reader).parameters)[2:]  # after root and annotations
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BadInput(f"dataset '{kind}' takes no option {unknown}; its options are {accepted}")
    with warnings.catch_warnings(record=skipped is not None) as caught:
        if skipped is not None:
            warnings.simplefilter("always", SkippedRow)
        records = storable(reader(Path(root), None if annotations is None else Path(annotations), **options))
    for warning in caught or []:
        if isinstance(warning.message, SkippedRow):
            skipped.append(warning.message.entry)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return sorted(records, key=lambda r: (r.shard_group or "", r.image_id))


# Register the readers.
from encoding.datasets import cifar100, coco, demo, flickr30k, folder, karpathy, webdataset  # noqa: E402,F401
