"""Run directories (`results/<name>/`) and a training run end to end: train, reload the best
checkpoint, report on the test split.

A run's name is one path component (letters, digits, `._-`); an existing run is never replaced
silently: continuing it takes `resume`, replacing it `overwrite`. A process writing a run holds its
lock (`pipeline.run_lock`) from before anything is deleted until the run is reported, so a second
writer (`--resume` and `--overwrite` included) is refused naming the holder's pid. Under torchrun rank 0
alone locks and clears the directory: every rank of one job writes the same run. Only the contents of
`results/<name>/` are ever deleted, and never its lock file.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from encoding.errors import BadInput
from encoding.runtime import torchrun_env
from pipeline import provenance
from pipeline.config import save_config
from pipeline.data import load_splits
from pipeline.report import report_run
from pipeline.run_lock import LOCK_FILE, run_lock
from pipeline.schema import check_run_name
from pipeline.training.loop import Trainer, TrainResult

RESULTS = Path("results")


@dataclass
class RunOutcome:
    trainer: Trainer
    result: TrainResult
    metrics: dict | None  # test metrics; None on torchrun ranks other than 0


def check_run_state(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """BadInput unless `resume` / `overwrite` fit what `out_dir` holds."""
    has_run = (out_dir / "last.pt").exists()
    if resume and overwrite:
        raise BadInput("--resume and --overwrite exclude each other")
    if resume and not has_run:
        raise BadInput(f"{out_dir / 'last.pt'}: nothing to resume")
    if has_run and not (resume or overwrite):
        raise BadInput(f"{out_dir}: a run named '{out_dir.name}' exists; pass --resume to continue it or --overwrite")


def clear_run_dir(out_dir: Path) -> None:
    """Delete everything in `out_dir` but its lock file; a symbolic link is removed, never followed."""
    if out_dir.is_symlink():
        raise BadInput(f"{out_dir}: is a symbolic link; --overwrite replaces only a real run directory")
    for entry in out_dir.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextmanager
def writing_run(name: str, resume: bool, overwrite: bool, results: Path = RESULTS) -> Iterator[Path]:
    """`results/<name>`, locked for the block and checked against `resume` / `overwrite`. With `overwrite`
    the directory is emptied by `train_run` once the new run is built, so a config the trainer refuses
    leaves the old run whole."""
    out_dir = results / check_run_name(name)
    if resume:  # refused before the lock creates the directory
        check_run_state(out_dir, resume, overwrite)
    rank = torchrun_env()[0]
    with run_lock(out_dir) if rank == 0 else nullcontext(out_dir):
        check_run_state(out_dir, resume, overwrite)
        if overwrite and out_dir.is_symlink():
            clear_run_dir(out_dir)  # refuses a symbolic link before anything is built
        yield out_dir


def train_run(
    trainer_class: type[Trainer],
    config,
    out_dir: Path,
    resume: bool = False,
    verify: bool = True,
    overwrite: bool = False,
) -> RunOutcome:
    """Train `config` with `trainer_class` into `out_dir`, then evaluate the best checkpoint on the test split.
    `overwrite`: empty `out_dir` once the trainer is built (a refused config deletes nothing).

    The run records its provenance (`provenance.json`, and in metrics.json); `resume` is refused on
    other data or with another config (`provenance.check_resume`). `verify`: hash the cache's shards.
    """
    d = config.data
    current = provenance.describe(Path(d.cache), config)
    if resume:
        trained = provenance.recorded(out_dir)
        if trained is None:
            print(f"warning: {out_dir} records no provenance (an older run); its cache and split are not checked")
        else:
            provenance.check_resume(out_dir, config, trained, current)
    splits = load_splits(Path(d.cache), list(dict.fromkeys([d.train_split, d.val_split, d.test_split])), verify)
    trainer = trainer_class(config, splits[d.train_split], splits[d.val_split], out_dir)
    if resume:
        trainer.resume()
    if trainer.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            clear_run_dir(out_dir)
        save_config(config, out_dir / "config.yaml")
        provenance.record(out_dir, current)
    result = trainer.run()
    if trainer.rank != 0:  # under torchrun, rank 0 alone writes checkpoints and reports
        return RunOutcome(trainer, result, None)
    trainer.load_best()
    metrics = report_run(trainer, splits[d.test_split], d.test_split, out_dir, current)
    return RunOutcome(trainer, result, metrics)
