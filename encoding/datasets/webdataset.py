"""Webdataset tar shards as img2dataset writes them (`--dataset webdataset --root 'DIR/{00000..00099}.tar'`).

A sample is the run of members sharing a key (the member name up to the first dot of its base name): an
image (`jpg`, `jpeg`, `png` or `webp`), its caption (`txt`), optional `json` metadata (a `captions` list there
gives several captions) and an optional class number (`cls`). The image id is the key.

Tars are read with the standard library's `tarfile`, never extracted: a scan reads each tar's headers
(seeking past the image bytes) and its small text members; loader workers later read each image's bytes at
the offset the scan found, addressed as `tar://TAR@OFFSET:SIZE#MEMBER`. Every record carries its tar as its
`shard_group`, so a cache shard never mixes two tars: a resumed run re-reads the images of unfinished tars
only, and torchrun ranks share the tars.
"""

import glob
import io
import itertools
import logging
import os
import re
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from encoding.datasets import DATASETS, IMAGE_SOURCES, ImageRecord
from encoding.errors import BadInput
from encoding.safe_load import parse_json, shown

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTENSIONS = ("txt", "json", "cls")  # read during the scan
TEXT_BYTES = 1 << 20
MAX_SCAN_PROCESSES = 8  # tars scanned at once  # a caption or json member larger than this is not a caption
_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
_LOCATION = re.compile(r"^(?P<tar>.*)@(?P<offset>\d+):(?P<size>\d+)#(?P<member>.*)$")
log = logging.getLogger(f"xalign.{__name__}")


def _alternatives(body: str) -> list[str]:
    """One brace group's expansions: `00000..00099` (zero-padded to the wider bound) or `a,b,c`."""
    match = _RANGE.match(body)
    if match is None:
        return body.split(",")
    first, last = match.groups()
    width = len(first) if first.startswith("0") or len(first) == len(last) else 0
    step = 1 if int(last) >= int(first) else -1
    return [f"{i:0{width}d}" for i in range(int(first), int(last) + step, step)]


def expand_braces(pattern: str) -> list[str]:
    """Every string a brace pattern names, in order: 'a/{0..2}.tar' → ['a/0.tar', 'a/1.tar', 'a/2.tar']."""
    parts = _BRACES.split(pattern)  # text, group, text, group, ..., text
    choices = [[part] if i % 2 == 0 else _alternatives(part) for i, part in enumerate(parts)]
    return ["".join(combination) for combination in itertools.product(*choices)]


def tar_files(pattern: str) -> list[Path]:
    """The tars `pattern` names (brace ranges and lists, then globs), in order; `BadInput` naming a file a brace
    pattern names that does not exist, a glob that matches nothing, or a name that is not a `.tar` file."""
    tars: list[str] = []
    names = expand_braces(pattern)
    for name in names:
        if glob.has_magic(name):
            matched = sorted(glob.glob(name))
            if not matched:
                raise BadInput(f"--root {pattern}: '{name}' matches no file (expected webdataset .tar shards)")
            tars += matched
        else:
            tars.append(name)
    missing = [name for name in tars if not Path(name).is_file()]
    if missing:
        raise BadInput(
            f"{missing[0]}: no such tar ({len(missing)} of the {len(names)} files --root {pattern} names are missing)"
        )
    for name in tars:
        if not name.endswith(".tar"):
            raise BadInput(f"{name}: not a .tar file (--root names webdataset shards, e.g. 'DIR/{{00000..00009}}.tar')")
    return [Path(name) for name in dict.fromkeys(tars)]


def _key_and_extension(name: str) -> tuple[str, str]:
    """Webdataset's split of a member name: ('dir/000012', 'jpg') for 'dir/000012.jpg'."""
    directory, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _text(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> str:
    if member.size > TEXT_BYTES:
        raise BadInput(f"{where}: {member.size} bytes; expected a caption or metadata under {TEXT_BYTES} bytes")
    try:
        return tar.extractfile(member).read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"{where}: not UTF-8 text ({err})") from err


def _members(path: Path) -> tuple[dict[str, dict[str, tarfile.TarInfo]], dict[str, str]]:
    """Each key's members by extension, in tar order, and the text of its txt/json/cls members; `BadInput`
    for a tar that is not readable or ends early (truncated)."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    texts: dict[str, str] = {}
    try:
        with open(path, "rb") as file, tarfile.open(fileobj=file, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, extension = _key_and_extension(member.name)
                sample = samples.setdefault(key, {})
                if extension in sample:
                    raise BadInput(f"{path}: sample '{key}' holds two '{extension}' members")
                sample[extension] = member
                if extension in TEXT_EXTENSIONS:
                    texts[member.name] = _text(tar, member, f"{path}: member '{member.name}'")
            file.seek(tar.offset)
            if file.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
                raise tarfile.ReadError("no end-of-archive marker")
    except (tarfile.TarError, OSError) as err:
        raise BadInput(f"{path}: not a readable tar ({err}); it is truncated or damaged") from err
    return samples, texts


def _captions(path: Path, key: str, sample: dict[str, tarfile.TarInfo], texts: dict[str, str]) -> list[str]:
    """The json's `captions` list when it has one, else the txt caption; `BadInput` when there is neither."""
    if "json" in sample:
        where = f"{path}: member '{sample['json'].name}'"
        meta = parse_json(texts[sample["json"].name], where)
        captions = meta.get("captions") if isinstance(meta, dict) else None
        if captions is not None:
            if not isinstance(captions, list) or not all(isinstance(c, str) and c.strip() for c in captions):
                raise BadInput(f"{where}: 'captions' is {shown(captions):.80}; expected a list of non-blank strings")
            return [c.strip() for c in captions]
    if "txt" not in sample or not texts[sample["txt"].name].strip():
        raise BadInput(f"{path}: sample '{key}' has no caption (expected a non-blank '{key}.txt')")
    return [texts[sample["txt"].name].strip()]


def _label(path: Path, member: tarfile.TarInfo | None, texts: dict[str, str]) -> int | None:
    if member is None:
        return None
    text = texts[member.name].strip()
    if not re.fullmatch(r"-?\d+", text):
        raise BadInput(f"{path}: member '{member.name}' is {shown(text):.60}; expected a class number")
    return int(text)


def read_tar(path: Path) -> tuple[list[ImageRecord], set[str]]:
    """One record per sample of one tar (its image addressed by offset, its captions, its class), and the
    extensions of the members left unread (other fields, a second image)."""
    samples, texts = _members(path)
    records, unread = [], set()
    tar = str(path.resolve())
    for key, sample in samples.items():
        images = [extension for extension in IMAGE_EXTENSIONS if extension in sample]
        if not images:
            raise BadInput(f"{path}: sample '{key}' has no image (expected one of {', '.join(IMAGE_EXTENSIONS)})")
        unread |= {extension for extension in sample if extension not in TEXT_EXTENSIONS} - {images[0]}
        image = sample[images[0]]
        location = f"tar://{tar}@{image.offset_data}:{image.size}#{image.name}"
        captions, label = _captions(path, key, sample, texts), _label(path, sample.get("cls"), texts)
        records.append(ImageRecord(key, location, captions, label, shard_group=tar))
    return records, unread


@DATASETS.register("webdataset")
def read_webdataset(root: Path, annotations: Path | None = None) -> list[ImageRecord]:
    """Every sample of the tars `root` names (a brace/glob pattern); a key in two tars is `BadInput`."""
    if annotations is not None:
        raise BadInput(f"--annotations {annotations}: webdataset captions come from the tars; drop --annotations")
    tars = tar_files(str(root))
    records, seen, unread = [], {}, set()
    with ProcessPoolExecutor(max_workers=min(len(tars), MAX_SCAN_PROCESSES, os.cpu_count() or 1)) as pool:
        scans = tqdm(pool.map(read_tar, tars), total=len(tars), desc="scan tars", unit="tar", disable=None)
        for path, (tar_records, tar_unread) in zip(tars, scans):
            unread |= tar_unread
            for record in tar_records:
                if record.image_id in seen:
                    other = seen[record.image_id]
                    raise BadInput(f"{path}: sample '{record.image_id}' is also in {other}; keys must be unique")
                seen[record.image_id] = path
                records.append(record)
    if unread:
        log.warning(f"{root}: members with extensions {sorted(unread)} are not read (one image per sample)")
    return records


@IMAGE_SOURCES.register("tar")
def open_tar_member(location: str) -> Image.Image:
    """'TAR@OFFSET:SIZE#MEMBER' → the image stored at that offset of the tar, checked against the member's header."""
    match = _LOCATION.match(location)
    if match is None:
        raise ValueError(f"tar://{location}: expected tar://TAR@OFFSET:SIZE#MEMBER")
    offset, size = int(match["offset"]), int(match["size"])
    data = _read_member(match["tar"], offset, size)
    return Image.open(io.BytesIO(data))


def _read_member(tar: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset`; the ustar header block just before must record that size (the tar is unchanged)."""
    with open(tar, "rb") as file:
        if offset < tarfile.BLOCKSIZE or offset + size > os.fstat(file.fileno()).st_size:
            raise ValueError(f"{tar}: no member at offset {offset} (the tar changed since it was scanned)")
        file.seek(offset - tarfile.BLOCKSIZE)
        header = file.read(tarfile.BLOCKSIZE)
        data = file.read(size)
    try:
        recorded = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape").size
    except tarfile.HeaderError as err:
        raise ValueError(f"{tar}: no member header at offset {offset} ({err}); the tar changed") from err
    if recorded != size or len(data) != size:
        raise ValueError(f"{tar}: the member at offset {offset} holds {recorded} bytes, not {size}; the tar changed")
    return data
