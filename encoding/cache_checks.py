"""Checks on a cache as read back: `metadata.json` and `splits.json` shapes, shard files, hashes and arrays.

Every refusal is `BadInput` naming the file (and key, dataset or ids) and what was expected, so a
hand-edited, truncated or tampered cache stops with exit 2 instead of a traceback or a silent error.
"""

import hashlib
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from encoding.errors import BadInput
from encoding.safe_load import shown

HASH_PROGRESS_BYTES = 1 << 30  # show a progress bar when hashing more than this
SPLIT_NAMES = ("train", "val", "test")
_METADATA_KEYS = (  # (dotted key, expected type) of the contract; checked in order, a parent before its fields
    ("complete", bool),
    ("shards", list),
    ("image_model", dict),
    ("image_model.dim", int),
    ("text_model", dict),
    ("text_model.dim", int),
)
TOKEN_KEYS = (  # present (all four) only in token caches, `xalign encode --tokens`
    ("image_model.num_tokens", int),
    ("image_model.token_dim", int),
    ("text_model.token_dim", int),
    ("text_model.max_tokens", int),
)
PROJECT_KEYS = (("num_shards", int),)  # added beyond the contract: checked when present, else derived
_SHARD_KEYS = (("file", str), ("sha256", str), ("num_images", int), ("num_captions", int))
_PROJECT_SHARD_KEYS = (("index", int),)  # likewise, in each shard entry
COLUMNS = (  # (CacheArrays field, shard dataset, UTF-8 strings?, required?)
    ("image_ids", "images/ids", True, True),
    ("image_embeddings", "images/embeddings", False, True),
    ("image_paths", "images/paths", True, True),
    ("image_labels", "images/labels", False, False),
    ("image_splits", "images/splits", True, False),
    ("image_pixel_sha1", "images/pixel_sha1", True, False),
    ("caption_image_ids", "captions/image_ids", True, True),
    ("caption_embeddings", "captions/embeddings", False, True),
    ("caption_text", "captions/text", True, True),
)
_TYPE_NAMES = {bool: "a boolean", int: "an integer", str: "a string", list: "a list", dict: "an object"}


def json_type(value) -> str:
    """The JSON name of a parsed value's type ('object', 'array', 'string', ...), for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def describe(value) -> str:
    """A parsed JSON value for messages: its type and (shortened) repr, e.g. "string '3'", "null"."""
    return "null" if value is None else f"{json_type(value)} {shown(value):.60}"


def _is(value, kind: type) -> bool:
    """isinstance, except that a JSON boolean is not an integer."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _check_key(path: Path, container: dict, key: str, dotted: str, kind: type) -> None:
    if key not in container:
        raise BadInput(f"{path}: key '{dotted}' missing; expected {_TYPE_NAMES[kind]}")
    value = container[key]
    if not _is(value, kind):
        raise BadInput(f"{path}: key '{dotted}' is {describe(value)}, expected {_TYPE_NAMES[kind]}")


def check_metadata(path: Path, meta, cache_format: str) -> None:
    """Refuse a `metadata.json` payload that lacks a contract key the readers need, or has one (or a key of
    `PROJECT_KEYS`) of the wrong type."""
    if not isinstance(meta, dict):
        raise BadInput(f"{path}: expected a JSON object, found {json_type(meta)}")
    if meta.get("format") != cache_format:
        raise BadInput(f"{path}: 'format' is {meta.get('format')!r}, expected {cache_format!r}")
    project = tuple(item for item in PROJECT_KEYS if item[0] in meta)
    for dotted, kind in _METADATA_KEYS + project + (TOKEN_KEYS if has_tokens(meta) else ()):
        *parents, key = dotted.split(".")
        container = meta[parents[0]] if parents else meta
        _check_key(path, container, key, dotted, kind)
    for i, shard in enumerate(meta["shards"]):
        if not isinstance(shard, dict):
            raise BadInput(f"{path}: key 'shards[{i}]' is {json_type(shard)}, expected an object")
        for key, kind in _SHARD_KEYS + tuple(item for item in _PROJECT_SHARD_KEYS if item[0] in shard):
            _check_key(path, shard, key, f"shards[{i}].{key}", kind)
        if Path(shard["file"]).name != shard["file"] or shard["file"] in ("", ".", ".."):
            raise BadInput(
                f"{path}: key 'shards[{i}].file' is {shard['file']!r}, expected a file name inside the cache"
            )


def check_loadable(path: Path, meta: dict) -> None:
    """Refuse (`BadInput`) the checked `meta` of `path` (a metadata.json) when its cache is incomplete, lists no
    shards or holds no images."""
    if not meta["complete"]:
        raise BadInput(
            f"{path.parent}: cache is incomplete ({len(meta['shards'])} of {meta['num_shards']} shards); "
            "rerun the same `xalign encode` command to finish it"
        )
    if not meta["shards"]:
        raise BadInput(f"{path}: lists no shards; expected at least one")
    if not any(shard["num_images"] for shard in meta["shards"]):
        raise BadInput(
            f"{path.parent}: holds no images (every item was skipped at encoding; `xalign inspect` says why)"
        )


def with_project_keys(meta: dict) -> dict:
    """A checked `meta` with the keys the project added beyond the contract filled in where absent: `num_shards`
    (the shards listed) and each shard's `index` (its position in `shards`)."""
    shards = [{"index": i, **shard} for i, shard in enumerate(meta["shards"])]
    return {"num_shards": len(shards), **meta, "shards": shards}


def has_tokens(meta: dict) -> bool:
    """Whether `metadata.json` describes a token cache: any of `TOKEN_KEYS` present (then all four must be)."""
    sides = (dotted.split(".") for dotted, _ in TOKEN_KEYS)
    return any(isinstance(meta.get(side), dict) and key in meta[side] for side, key in sides)


def check_splits(path: Path, splits) -> None:
    """Refuse a `splits.json` payload that is not an object whose split lists hold image id strings."""
    if not isinstance(splits, dict):
        raise BadInput(f"{path}: expected a JSON object of image id lists, found {json_type(splits)}")
    for name in SPLIT_NAMES:
        if name not in splits:
            raise BadInput(f"{path}: key '{name}' missing; expected a list of image ids")
    for name, ids in splits.items():
        if name not in (*SPLIT_NAMES, "tuning") and not isinstance(ids, list):
            continue  # seed, method and other scalar entries
        if not isinstance(ids, list):
            raise BadInput(f"{path}: key '{name}' is {json_type(ids)}, expected a list of image ids")
        bad = next((i for i, image_id in enumerate(ids) if not isinstance(image_id, str)), None)
        if bad is not None:
            raise BadInput(f"{path}: key '{name}' item {bad} is {describe(ids[bad])}, expected an image id string")


def sha256_of(path: Path, progress=None) -> str:
    """Hex sha256 of a file, streamed in 1 MiB blocks; `progress(nbytes)` is called after each block."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise BadInput(
            f"{path}: shard file missing (listed in metadata.json); "
            "rerun the same `xalign encode` command to rewrite it"
        )
    return path


def open_shard(path: Path) -> h5py.File:
    """The shard opened read-only (use as a context manager); `BadInput` when missing, truncated or not HDF5."""
    try:
        return h5py.File(_require_file(path), "r")
    except OSError as err:
        raise BadInput(f"{path}: not a readable HDF5 shard ({err}); it is truncated or damaged: re-encode") from err


def verify_hashes(cache_dir: Path, shards: list[dict]) -> None:
    """Compare every shard file's sha256 with its metadata entry; a progress bar when there is over 1 GiB."""
    paths = [_require_file(Path(cache_dir) / shard["file"]) for shard in shards]
    total = sum(path.stat().st_size for path in paths)
    quiet = True if total <= HASH_PROGRESS_BYTES else None  # None: tqdm's own choice (off without a terminal)
    with tqdm(total=total, unit="B", unit_scale=True, desc="verify sha256", disable=quiet) as progress:
        for path, shard in zip(paths, shards):
            digest = sha256_of(path, progress.update)
            if digest != shard["sha256"]:
                raise BadInput(
                    f"{path}: sha256 {digest} differs from metadata.json's {shard['sha256']}; the file changed "
                    "after encoding (re-encode, or pass --no-verify to skip hashing)"
                )


def read_column(f: h5py.File, path: Path, key: str, strings: bool = False) -> np.ndarray:
    """Dataset `key` of an open shard ((n,) object array of str when `strings`); `BadInput` naming shard and key."""
    if key not in f:
        raise BadInput(f"{path}: no dataset '{key}'; expected an xalign shard (re-encode)")
    try:
        data = f[key]
        return np.asarray(data.asstr()[()], dtype=object) if strings else data[()]
    except (OSError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as err:
        what = "UTF-8 strings" if strings else "an array"
        raise BadInput(f"{path}: dataset '{key}' is not readable as {what} ({err}); re-encode") from err


def check_rows(path: Path, key: str, values: np.ndarray, expected: int, count_key: str) -> None:
    """Refuse a dataset whose row count differs from the shard's metadata entry."""
    if len(values) != expected:
        raise BadInput(f"{path}: '{key}' has {len(values)} rows, metadata.json's {count_key} is {expected}")


def check_embeddings(path: Path, key: str, values: np.ndarray, dim: int, dim_key: str, finite: bool = True) -> None:
    """Refuse (n, D) embeddings that are not floats, not `dim` wide, or (when `finite`) hold NaN or inf."""
    if values.dtype.kind != "f" or values.ndim != 2:
        raise BadInput(f"{path}: '{key}' is {values.dtype} of shape {values.shape}, expected (n, {dim}) floats")
    if values.shape[1] != dim:
        raise BadInput(f"{path}: '{key}' has dim {values.shape[1]}, metadata.json's {dim_key} is {dim}")
    bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1)) if finite else ()
    if len(bad_rows):
        raise BadInput(
            f"{path}: '{key}' has {len(bad_rows)} of {len(values)} rows with NaN or inf "
            f"(first: row {bad_rows[0]}); re-encode"
        )


def embedding_check(meta: dict, key: str):
    """`check(path, rows)`: `check_embeddings` of rows of dataset `key` (`images/embeddings` or `captions/embeddings`)
    read from shard `path`, against the metadata's dim of that side."""
    side = "image" if key.startswith("images/") else "text"
    dim = meta[f"{side}_model"]["dim"]
    return lambda path, rows: check_embeddings(path, key, rows, dim, f"{side}_model.dim")


INPUT_COLUMNS = ("images/embeddings", "captions/embeddings", "captions/text")  # left out of a shard's index


def read_shard(path: Path, entry: dict, meta: dict, dtype, inputs: bool = True) -> dict[str, np.ndarray]:
    """One shard's columns by CacheArrays field (embeddings as `dtype`), checked against its metadata entry.
    Without `inputs`, the index only: embeddings and caption text are not read (their shapes are checked)."""
    with open_shard(path) as f:
        fields = {
            name: (key, read_column(f, path, key, strings))
            for name, key, strings, required in COLUMNS
            if (required or key in f) and (inputs or key not in INPUT_COLUMNS)
        }
        if not inputs:
            for key in INPUT_COLUMNS:
                column = f[key] if key in f else read_column(f, path, key)
                fields[key] = (key, np.broadcast_to(np.zeros((), column.dtype), column.shape))  # shape only
        if has_tokens(meta):
            check_token_datasets(f, path, entry, meta)
    for key, value in fields.values():
        side = "image" if key.startswith("images/") else "text"
        count = "num_images" if side == "image" else "num_captions"
        check_rows(path, key, value, entry[count], f"shards[{entry['index']}].{count}")
        if key.endswith("/embeddings"):
            check_embeddings(path, key, value, meta[f"{side}_model"]["dim"], f"{side}_model.dim", finite=inputs)
    return {
        name: value.astype(dtype, copy=False) if key.endswith("/embeddings") else value
        for name, (key, value) in fields.items()
        if name not in INPUT_COLUMNS
    }


def token_dataset(f: h5py.File, path: Path, key: str, ndim: int, kind: str) -> h5py.Dataset:
    """Dataset `key` of an open shard, checked to be `ndim`-dimensional of dtype kind `kind` ('f' float, 'b' bool)."""
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise BadInput(f"{path}: no dataset '{key}'; expected one in a token cache (re-encode with --tokens)")
    data = f[key]
    if data.ndim != ndim or data.dtype.kind != kind:
        what = {"f": "floats", "b": "booleans"}[kind]
        raise BadInput(f"{path}: dataset '{key}' is {data.dtype} of shape {data.shape}, expected {ndim}-D {what}")
    return data


def check_token_datasets(f: h5py.File, path: Path, entry: dict, meta: dict) -> dict[str, tuple[int, ...]]:
    """The token datasets' shapes, checked against the shard's metadata entry without reading them.

    `images/tokens` (n, num_tokens, token_dim); `captions/tokens` (m, L, token_dim) with L <= max_tokens;
    `captions/token_mask` (m, L) bool. A mismatch is `BadInput` naming the shard file and the dataset.
    """
    image, text, n, m = meta["image_model"], meta["text_model"], entry["num_images"], entry["num_captions"]
    images = token_dataset(f, path, "images/tokens", 3, "f").shape
    if images != (n, image["num_tokens"], image["token_dim"]):
        raise BadInput(
            f"{path}: dataset 'images/tokens' has shape {images}, expected ({n}, {image['num_tokens']}, "
            f"{image['token_dim']}) (shards[{entry['index']}].num_images, image_model.num_tokens, .token_dim)"
        )
    captions = token_dataset(f, path, "captions/tokens", 3, "f").shape
    if captions[0] != m or captions[2] != text["token_dim"] or captions[1] > text["max_tokens"]:
        raise BadInput(
            f"{path}: dataset 'captions/tokens' has shape {captions}, expected ({m}, L, {text['token_dim']}) with "
            f"L <= {text['max_tokens']} (shards[{entry['index']}].num_captions, text_model.max_tokens, .token_dim)"
        )
    mask = token_dataset(f, path, "captions/token_mask", 2, "b").shape
    if mask != captions[:2]:
        raise BadInput(f"{path}: dataset 'captions/token_mask' has shape {mask}, expected {captions[:2]} as tokens")
    return {"images/tokens": images, "captions/tokens": captions, "captions/token_mask": mask}


def image_rows(cache_dir: Path, image_ids: np.ndarray) -> dict[str, int]:
    """{image id: its row}; `BadInput` on a repeated image id."""
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    if len(row_of) != len(image_ids):
        ids, counts = np.unique(image_ids.astype(str), return_counts=True)
        repeated = ids[counts > 1]
        raise BadInput(
            f"{cache_dir}: {len(repeated)} image ids appear in more than one row, e.g. {repeated[:5].tolist()}; "
            "expected each image once"
        )
    return row_of


def caption_rows(path: Path, row_of: dict[str, int], caption_image_ids: np.ndarray) -> np.ndarray:
    """(m,) int64 row of the image of each caption of shard `path`; `BadInput` on a caption of an unknown image."""
    rows = np.fromiter((row_of.get(i, -1) for i in caption_image_ids), dtype=np.int64, count=len(caption_image_ids))
    orphans = np.flatnonzero(rows < 0)
    if len(orphans):
        unknown = sorted(set(caption_image_ids[orphans]))
        raise BadInput(
            f"{path}: {len(orphans)} captions point at {len(unknown)} image ids not in the cache, e.g. "
            f"{unknown[:5]}; expected every caption's image in the cache"
        )
    return rows
