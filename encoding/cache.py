"""The embedding cache on disk: HDF5 shards plus `metadata.json` (format in README "Cache format").

A shard is written to a temporary name and renamed when complete; `metadata.json` is rewritten
atomically, under a file lock, after every shard, so a killed run leaves a valid, resumable cache.
Shard files carry no timestamps, so the same contents give the same bytes (and sha256).
"""

import contextlib
import datetime
import fcntl
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from encoding import cache_checks as checks
from encoding import token_shards
from encoding.atomic import atomic_target, write_atomic
from encoding.cache_checks import sha256_of
from encoding.errors import BadInput
from encoding.fingerprints import cache_fingerprint, splits_fingerprint
from encoding.safe_load import load_json

FORMAT = "xalign-cache"
VERSION = 1
METADATA = "metadata.json"
SPLITS = "splits.json"
_STR = h5py.string_dtype("utf-8")


@dataclass
class ShardData:
    """One shard's contents. n images, m captions."""

    image_ids: list[str]  # (n,)
    image_embeddings: np.ndarray  # (n, D_img)
    image_paths: list[str]  # (n,)
    caption_image_ids: list[str]  # (m,)
    caption_embeddings: np.ndarray  # (m, D_txt)
    caption_text: list[str]  # (m,)
    image_labels: np.ndarray | None = None  # (n,) int64
    image_splits: list[str] | None = None  # (n,) the dataset's own split name per image
    image_pixel_sha1: list[str] | None = None  # (n,) hash of decoded pixels, for duplicate grouping
    skipped: list[dict] | None = None  # [{image_id, path, reason}]
    image_tokens: np.ndarray | None = None  # (n, T, D) float16, with `--tokens` (see `token_shards`)
    caption_tokens: np.ndarray | None = None  # (m, L, D') float16
    caption_token_mask: np.ndarray | None = None  # (m, L) bool


@dataclass
class CacheArrays:
    """A cache (or a subset of its images) in memory. N images, M captions."""

    image_ids: np.ndarray  # (N,) str
    image_paths: np.ndarray  # (N,) str
    caption_image_ids: np.ndarray  # (M,) str
    caption_image_index: np.ndarray  # (M,) int64, row of each caption's image
    image_embeddings: np.ndarray | None = None  # (N, D_img); None in an index (`Cache.arrays(inputs=False)`)
    caption_embeddings: np.ndarray | None = None  # (M, D_txt); likewise
    caption_text: np.ndarray | None = None  # (M,) str; likewise
    image_labels: np.ndarray | None = None  # (N,) int64
    image_splits: np.ndarray | None = None  # (N,) str
    image_pixel_sha1: np.ndarray | None = None  # (N,) str

    def keeps(self, image_ids) -> np.ndarray:
        """(N,) bool: whether each image's id is in `image_ids` (a hash lookup per id: `np.isin` on object arrays
        of strings takes minutes at a million ids)."""
        wanted = set(image_ids)
        return np.fromiter((i in wanted for i in self.image_ids), dtype=bool, count=len(self.image_ids))

    def rows_of(self, image_ids) -> tuple[np.ndarray, np.ndarray]:
        """(n,) cache rows of the images whose id is in `image_ids` and (m,) rows of their captions, in order."""
        keep_images = self.keeps(image_ids)
        return np.flatnonzero(keep_images), np.flatnonzero(keep_images[self.caption_image_index])

    def select(self, image_ids) -> "CacheArrays":
        """The images whose id is in `image_ids` (cache order kept) and all their captions."""
        keep_images = self.keeps(image_ids)
        keep_captions = keep_images[self.caption_image_index]
        new_row = np.cumsum(keep_images) - 1
        optional = {
            name: None if (value := getattr(self, name)) is None else value[keep]
            for names, keep in (
                (("image_labels", "image_splits", "image_pixel_sha1", "image_embeddings"), keep_images),
                (("caption_embeddings", "caption_text"), keep_captions),
            )
            for name in names
        }
        return CacheArrays(
            image_ids=self.image_ids[keep_images],
            image_paths=self.image_paths[keep_images],
            caption_image_ids=self.caption_image_ids[keep_captions],
            caption_image_index=new_row[self.caption_image_index[keep_captions]].astype(np.int64),
            **optional,
        )


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def write_shard(cache_dir: Path, index: int, data: ShardData, dtype: str = "float16") -> dict:
    """Write shard `index` atomically (temp name, then rename); returns its metadata entry."""
    final = Path(cache_dir) / shard_name(index)
    with atomic_target(final) as tmp, h5py.File(tmp, "w", track_order=False) as f:
        images = f.create_group("images")
        images.create_dataset("ids", data=np.asarray(data.image_ids, dtype=object), dtype=_STR)
        images.create_dataset("embeddings", data=np.asarray(data.image_embeddings, dtype=dtype))
        images.create_dataset("paths", data=np.asarray(data.image_paths, dtype=object), dtype=_STR)
        if data.image_labels is not None:
            images.create_dataset("labels", data=np.asarray(data.image_labels, dtype=np.int64))
        if data.image_splits is not None:
            images.create_dataset("splits", data=np.asarray(data.image_splits, dtype=object), dtype=_STR)
        if data.image_pixel_sha1 is not None:
            images.create_dataset("pixel_sha1", data=np.asarray(data.image_pixel_sha1, dtype=object), dtype=_STR)
        captions = f.create_group("captions")
        captions.create_dataset("image_ids", data=np.asarray(data.caption_image_ids, dtype=object), dtype=_STR)
        captions.create_dataset("embeddings", data=np.asarray(data.caption_embeddings, dtype=dtype))
        captions.create_dataset("text", data=np.asarray(data.caption_text, dtype=object), dtype=_STR)
        if data.image_tokens is not None:
            token_shards.write_tokens(f, data.image_tokens, data.caption_tokens, data.caption_token_mask)
        f.attrs["skipped"] = json.dumps(data.skipped or [])
    return {
        "index": index,
        "file": final.name,
        "num_images": len(data.image_ids),
        "num_captions": len(data.caption_text),
        "sha256": sha256_of(final),
        "skipped": data.skipped or [],
    }


def read_metadata(cache_dir: Path) -> dict:
    """`metadata.json`, checked for every key the readers need (`cache_checks.check_metadata`), with the keys
    the project added beyond the contract derived where absent (`cache_checks.with_project_keys`)."""
    path = Path(cache_dir) / METADATA
    if not path.is_file():
        raise BadInput(f"{path}: not an xalign cache (no {METADATA}); build one with `xalign encode`")
    meta = load_json(path)
    checks.check_metadata(path, meta, FORMAT)
    return checks.with_project_keys(meta)


def _write_json(path: Path, payload: dict) -> None:
    write_atomic(path, json.dumps(payload, indent=2))


def _field(meta: dict, key: str):
    """`meta["a"]["b"]` for the key `"a.b"`; None where an entry is missing."""
    value = meta
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _difference(key: str, stored, wanted) -> tuple[str, object, object] | None:
    """(dotted key, stored value, wanted value) of the first difference, inside nested dicts and lists of one
    length; None if equal."""
    if stored == wanted:
        return None
    if isinstance(stored, dict) and isinstance(wanted, dict):
        sub = next(k for k in [*wanted, *stored] if k not in stored or k not in wanted or stored[k] != wanted[k])
        inner = (f"{key}.{sub}", stored.get(sub), wanted.get(sub))
        return _difference(*inner) or inner  # `or`: a key missing on one side and None on the other
    if isinstance(stored, list) and isinstance(wanted, list) and len(stored) == len(wanted):
        i = next(i for i, (a, b) in enumerate(zip(stored, wanted)) if a != b)
        return _difference(f"{key}[{i}]", stored[i], wanted[i])
    return key, stored, wanted


def check_header(cache_dir: Path, meta: dict, expected: dict) -> None:
    """Refuse (`BadInput`) a cache whose `meta` differs from `expected`, naming the innermost differing key.

    A dotted key in `expected` compares one field of a nested entry (`"image_model.spec"`), so a
    request can be checked against a cache before any model is loaded.
    """
    for key, value in json.loads(json.dumps(expected)).items():  # compare as stored: tuples become lists
        difference = _difference(key, _field(meta, key), value)
        if difference is not None:
            where, stored, wanted = difference
            raise BadInput(
                f"{Path(cache_dir) / METADATA}: this cache was built with {where}={json.dumps(stored)}, "
                f"not {json.dumps(wanted)}; use another --out directory"
            )


@contextlib.contextmanager
def _locked(cache_dir: Path):
    with open(Path(cache_dir) / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def init_metadata(cache_dir: Path, header: dict, skipped: list[dict] | None = None) -> dict:
    """Create `metadata.json` from `header` (dataset, models, shard plan), or check it matches.

    A different dataset, model or shard plan in an existing cache raises `BadInput`: the cache is
    never mixed. `skipped` lists annotation rows the dataset reader rejected (kept with `shard: None`).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir):
        path = cache_dir / METADATA
        if path.exists():
            meta = read_metadata(cache_dir)
            check_header(cache_dir, meta, header)
            return meta
        meta = {
            "format": FORMAT,
            "version": VERSION,
            **json.loads(json.dumps(header)),
            "num_images": 0,
            "num_captions": 0,
            "shards": [],
            "skipped": [{**entry, "shard": None} for entry in skipped or []],
            "complete": False,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        _write_json(path, meta)
        return meta


def record_shard(cache_dir: Path, entry: dict) -> dict:
    """Add a written shard's entry to `metadata.json`; marks the cache complete when all are there."""
    with _locked(cache_dir):
        meta = read_metadata(cache_dir)
        shards = {s["index"]: s for s in meta["shards"]}
        shards[entry["index"]] = {k: v for k, v in entry.items() if k != "skipped"}
        meta["shards"] = [shards[i] for i in sorted(shards)]
        meta["num_images"] = sum(s["num_images"] for s in meta["shards"])
        meta["num_captions"] = sum(s["num_captions"] for s in meta["shards"])
        skipped = [s for s in meta["skipped"] if s.get("shard") != entry["index"]]
        meta["skipped"] = skipped + [{**s, "shard": entry["index"]} for s in entry["skipped"]]
        meta["complete"] = len(meta["shards"]) == meta["num_shards"]
        if meta["complete"]:
            meta["fingerprint"] = cache_fingerprint(meta)
        _write_json(Path(cache_dir) / METADATA, meta)
        return meta


def finished_shards(cache_dir: Path) -> set[int]:
    """Indices of shards recorded in metadata whose file exists with the recorded size and hash."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / METADATA).exists():
        return set()
    done = set()
    for shard in read_metadata(cache_dir)["shards"]:
        path = cache_dir / shard["file"]
        if path.is_file() and sha256_of(path) == shard["sha256"]:
            done.add(shard["index"])
    return done


@dataclass(frozen=True, eq=False)
class Cache:
    """A complete cache opened once for a command (`open_cache`): its checked `metadata.json` and content
    fingerprint; `splits.json` is read on first use. `verified`: every shard's sha256 was checked at open."""

    dir: Path
    meta: dict
    fingerprint: str
    verified: bool

    @property
    def shards(self) -> list[dict]:
        return self.meta["shards"]

    @property
    def has_splits(self) -> bool:
        return (self.dir / SPLITS).is_file()

    @cached_property
    def splits(self) -> dict:
        """`splits.json`, read and checked once (`read_splits`)."""
        return read_splits(self.dir)

    def arrays(self, dtype=np.float32, inputs: bool = True) -> CacheArrays:
        """Every shard read into contiguous arrays (embeddings as `dtype`), read anew on each call; `BadInput` on
        a missing dataset, row counts or dims other than the metadata's, non-finite embeddings, or a caption
        whose image is not in the cache. Without `inputs`, the index only: no embeddings, no caption text
        (`encoding.shard_rows` reads those for chosen rows). Captions' image ids are mapped to rows shard by
        shard; `caption_image_ids` then points at the image id strings (no string per caption is kept)."""
        parts: dict[str, list] = {}
        row_of = checks.image_rows(self.dir, np.concatenate([self.image_ids_of(shard) for shard in self.shards]))
        for shard in self.shards:
            path = self.dir / shard["file"]
            read = checks.read_shard(path, shard, self.meta, dtype, inputs)
            read["caption_image_index"] = checks.caption_rows(path, row_of, read.pop("caption_image_ids"))
            for name, value in read.items():
                parts.setdefault(name, []).append(value)
        for name, values in parts.items():
            if len(values) != len(self.shards):  # an optional column (labels, ...) in some shards only
                key = next(key for field, key, *_ in checks.COLUMNS if field == name)
                raise BadInput(
                    f"{self.dir}: '{key}' is in {len(values)} of {len(self.shards)} shards; expected all or none"
                )
        arrays = {name: np.concatenate(values) for name, values in parts.items()}
        arrays["caption_image_ids"] = arrays["image_ids"][arrays["caption_image_index"]]
        return CacheArrays(**arrays)

    def image_ids_of(self, shard: dict) -> np.ndarray:
        """(n,) the image ids of one shard, checked against its entry's count."""
        path = self.dir / shard["file"]
        with checks.open_shard(path) as f:
            ids = checks.read_column(f, path, "images/ids", strings=True)
        checks.check_rows(path, "images/ids", ids, shard["num_images"], f"shards[{shard['index']}].num_images")
        return ids


def open_cache(source: Path | Cache, verify: bool = True) -> Cache:
    """The cache in directory `source` opened: `metadata.json` read once and checked, a cache that is incomplete
    or holds no images refused (`cache_checks.check_loadable`), each shard's sha256 compared with its entry when
    `verify` (reads every byte), the fingerprint computed. A `Cache` is returned as it is (checked as asked when
    it was opened)."""
    if isinstance(source, Cache):
        return source
    cache_dir = Path(source)
    meta = read_metadata(cache_dir)
    checks.check_loadable(cache_dir / METADATA, meta)
    if verify:
        checks.verify_hashes(cache_dir, meta["shards"])
    return Cache(cache_dir, meta, cache_fingerprint(meta), verify)


def load_cache(cache_dir: Path, dtype=np.float32, verify: bool = True) -> CacheArrays:
    """Read every shard of a complete cache into contiguous arrays, refusing a damaged one (`BadInput`):
    `open_cache(cache_dir, verify).arrays(dtype)`."""
    return open_cache(cache_dir, verify).arrays(dtype)


def read_splits(cache_dir: Path) -> dict:
    """`splits.json`, checked: an object whose train/val/test (and other list) entries are lists of id strings."""
    path = Path(cache_dir) / SPLITS
    if not path.is_file():
        raise BadInput(f"{path}: no splits; run `xalign split {cache_dir}` first")
    splits = load_json(path)
    checks.check_splits(path, splits)
    return splits


def write_splits(cache_dir: Path, splits: dict) -> dict:
    """Write `splits.json` with its `fingerprint` and the `cache_fingerprint` of the cache it splits → the payload."""
    payload = {
        **splits,
        "fingerprint": splits_fingerprint(splits),
        "cache_fingerprint": cache_fingerprint(read_metadata(cache_dir)),
    }
    _write_json(Path(cache_dir) / SPLITS, payload)
    return payload
