"""A run directory's own records, and the refusal that keeps an explicit `--out` from replacing them.

A directory is a run directory when it holds one of `MARKERS` (what `xalign train` and `backbone-train`
write). Its records (`RECORDS`: config, provenance, checkpoints and their hashes, metrics files, run info,
history, lock) are written only by the commands that own them: training, and `xalign evaluate` to its default target.
`--out FILE` of `compare` or `evaluate` that lands on an existing record, once symbolic links and `..`
are resolved, is refused (exit 2) instead of silently replacing a run's results. `evaluate RUN --out`
naming the very file evaluate writes without `--out` is that default spelled out, and is allowed.
"""

from fnmatch import fnmatch
from pathlib import Path

from encoding.checkpoint_hashes import RECORD as CHECKPOINT_HASHES
from encoding.errors import BadInput
from pipeline.runs.lock import LOCK_FILE

MARKERS = ("config.yaml", "provenance.json", "best.pt", "last.pt")
RECORDS = (
    "config.yaml",
    "provenance.json",
    "*.pt",
    CHECKPOINT_HASHES,
    "metrics*.json",
    "run_info.json",
    "history.jsonl",
    LOCK_FILE,
)


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a directory holding one of a run's markers."""
    return Path(path).is_dir() and any((Path(path) / marker).is_file() for marker in MARKERS)


def check_output(out: Path, flag: str, default: Path | None = None) -> None:
    """BadInput when `out` (resolved) is an existing record of a run directory, other than `default`."""
    target = Path(out).resolve()
    if default is not None and target == Path(default).resolve():
        return
    if not target.exists() or not is_run_dir(target.parent):
        return
    if any(fnmatch(target.name, pattern) for pattern in RECORDS):
        shown = str(out) if Path(out) == target else f"{out} (= {target})"
        raise BadInput(
            f"{flag} {shown}: is run {target.parent}'s own {target.name}; writing it would replace the run's "
            "results; choose a file outside the run's records (config, provenance, checkpoints and their hashes, "
            "metrics*.json, run_info.json, history.jsonl)"
        )
