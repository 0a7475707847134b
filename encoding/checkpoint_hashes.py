"""The sha256 of every checkpoint a run writes, recorded next to it and checked whenever it is loaded.

A flipped bit in a weight of `best.pt` still unpickles into plausible tensors; without a hash, `xalign evaluate`
would print other numbers (or "embeddings contain NaN") and overwrite the run's metrics. So each checkpoint is
hashed once, in its temporary file before the rename, and the hash is kept in `checkpoints.json` in the same
directory: `{"sha256": {"best.pt": HEX, "last.pt": HEX}, "pending": {NAME: HEX}}`. Loading (`evaluate`,
`--resume`, `--rerank-with`, `encode --image-model RUN/best.pt`, zero-shot through such a text model) hashes
the file and refuses a mismatch, naming the file and both hashes; `verify=False` (`--no-verify`) skips it.
A checkpoint with no recorded hash (a run written before runs recorded them, or a file copied out of its run)
loads with a warning.

A sidecar rather than `provenance.json`: the provenance describes the data a run was trained on and is
written once; checkpoint hashes change every epoch and are read by `encoding/` too (`encode --image-model`),
which reads no run provenance. A save announces the new hash under `pending` before the rename and moves it to
`sha256` after, so a process killed between the two leaves a file that still verifies (old or new).
"""

import json
import logging
from pathlib import Path

from encoding.atomic import write_atomic
from encoding.cache_checks import sha256_of
from encoding.errors import BadInput
from encoding.safe_load import CONFIG_BYTES, load_json

RECORD = "checkpoints.json"
log = logging.getLogger(f"xalign.{__name__}")


def read_record(run_dir: Path) -> dict:
    """`{"sha256": {...}, "pending": {...}}` of `run_dir` (both empty when it records nothing), or BadInput."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return {"sha256": {}, "pending": {}}
    record = load_json(path, CONFIG_BYTES)
    if not isinstance(record, dict) or not all(isinstance(record.get(k, {}), dict) for k in ("sha256", "pending")):
        raise BadInput(f"{path}: expected an object with 'sha256' and 'pending' maps of checkpoint name to sha256")
    return {"sha256": record.get("sha256", {}), "pending": record.get("pending", {})}


def _write(run_dir: Path, record: dict) -> None:
    write_atomic(Path(run_dir) / RECORD, json.dumps(record, indent=2, sort_keys=True))


def record_pending(path: Path, digest: str) -> None:
    """Announce `digest` for the checkpoint about to be renamed onto `path`."""
    record = read_record(path.parent)
    record["pending"][path.name] = digest
    _write(path.parent, record)


def record_saved(path: Path, digest: str) -> None:
    """Record `digest` as the sha256 of the checkpoint now at `path`."""
    record = read_record(path.parent)
    record["pending"].pop(path.name, None)
    record["sha256"][path.name] = digest
    _write(path.parent, record)


def verified_sha256(
    path: Path, verify: bool = True, way_out: str = "pass --no-verify to load it as it is"
) -> str | None:
    """The sha256 of the checkpoint at `path`, checked against its record; None when `verify` is False.
    BadInput naming the file and both hashes on a mismatch (ending with `way_out`); a warning when no hash is
    recorded."""
    if not verify:
        return None
    path = Path(path)
    record = read_record(path.parent)
    accepted = [d for d in (record["sha256"].get(path.name), record["pending"].get(path.name)) if d is not None]
    actual = sha256_of(path)
    if not accepted:
        log.warning(
            f"{path}: no sha256 recorded in {path.parent / RECORD} (a run written before checkpoints "
            "were hashed, or a copied file); its integrity is not checked"
        )
    elif actual not in accepted:
        raise BadInput(
            f"{path}: sha256 {actual} differs from {accepted[0]}, recorded in {path.parent / RECORD} when it was "
            f"written: the file changed since (damaged or replaced); restore it, or {way_out}"
        )
    return actual
