"""Run directories (`results/<name>/`) and a training run end to end: train, reload the best
checkpoint, report on the test split.

A run's name is one path component (letters, digits, `._-`); an existing run is never replaced
silently: continuing it takes `resume`, replacing it `overwrite`. A process writing a run holds its
lock (`pipeline.runs.lock`) from before anything is moved until the run is reported, so a second
writer (`--resume` and `--overwrite` included) is refused naming the holder's pid. Under torchrun rank 0
alone locks and replaces the directory: every rank of one job writes the same run. `results/<name>` may be
a symbolic link only to a directory inside `results/`. Only the contents of `results/<name>/` are ever
deleted, and never its lock file.

Replacing a run never loses the old one to a new one that fails. Under the lock, the old run's entries are
renamed into `results/<name>/.replaced/` and the new run is written in their place; once the new run has
written its first checkpoint (`last.pt`), `.replaced/` is deleted. Any failure before that (bad input, a
crash, Ctrl-C, a diverging loss) deletes what the new run wrote and renames the old run back. A process
killed outright leaves `.replaced/` behind; the next writer of the run settles it under the lock by the same
rule (`settle_replaced`). The two moves go through `.replacing/` (renamed to `.replaced/` once the old run
is wholly inside), so a kill in the middle of either is undone by moving everything back.
The new run is written where it will live rather than staged elsewhere and swapped in: the lock file must
stay in `results/<name>/` (a swap of directories would swap locks), the many entries of a run could not be
swapped in one atomic rename anyway, and the trainer's TensorBoard writer, curves and `last.pt` keep one
place for the whole run. The price: during the new run's first epoch, the old run's files are under
`.replaced/` rather than at their usual paths.
"""

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from encoding.cache import open_cache
from encoding.errors import BadInput
from encoding.runtime import torchrun_env
from pipeline.config.experiment import save_config
from pipeline.config.schema import check_run_name
from pipeline.data.split_tensors import load_splits
from pipeline.reporting.report import report_run
from pipeline.runs import provenance
from pipeline.runs.lock import LOCK_FILE, run_lock
from pipeline.training.choice import trainer_for
from pipeline.training.loop import Trainer, TrainResult

RESULTS = Path("results")
REPLACED = ".replaced"  # the old run, set aside while a new one writes its first checkpoint
REPLACING = ".replacing"  # an old run half moved aside or half moved back: moved back
NOT_RUN = {LOCK_FILE, REPLACED, REPLACING}  # entries of a run directory that are not the run's files
log = logging.getLogger(f"xalign.{__name__}")


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


def check_inside(out_dir: Path, results: Path) -> None:
    """BadInput when `out_dir` is a symbolic link to somewhere not inside `results`: nothing is written through it."""
    if out_dir.is_symlink() and Path(results).resolve() not in out_dir.resolve().parents:
        raise BadInput(
            f"{out_dir}: a symbolic link to {out_dir.resolve()}, outside {results}/; a run is written only inside "
            f"{results}/: remove the link or use another name"
        )


def run_entries(out_dir: Path) -> list[Path]:
    return [entry for entry in out_dir.iterdir() if entry.name not in NOT_RUN]


def delete_entry(entry: Path) -> None:
    """Delete a file or directory tree; a symbolic link is removed, never followed."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def set_aside(out_dir: Path) -> None:
    """Rename the run in `out_dir` (all but its lock) into `out_dir/.replaced/`; a symbolic link is refused."""
    if out_dir.is_symlink():
        raise BadInput(f"{out_dir}: is a symbolic link; --overwrite replaces only a real run directory")
    moving = out_dir / REPLACING
    moving.mkdir()
    for entry in run_entries(out_dir):
        entry.rename(moving / entry.name)
    moving.rename(out_dir / REPLACED)


def move_back(out_dir: Path) -> None:
    """Rename the old run's entries in `.replacing/` back into `out_dir`."""
    moving = out_dir / REPLACING
    for entry in moving.iterdir():
        entry.rename(out_dir / entry.name)
    moving.rmdir()


def keep_new_run(out_dir: Path) -> None:
    """Delete the old run set aside in `.replaced/` once the new run in `out_dir` has its first checkpoint."""
    if (out_dir / REPLACED).is_dir() and (out_dir / "last.pt").is_file():
        shutil.rmtree(out_dir / REPLACED)


def settle_replaced(out_dir: Path) -> None:
    """Finish a replacement of the run in `out_dir`: keep the new run if it wrote its first checkpoint, else
    delete what it wrote and move the old run back. Nothing to do when no old run is set aside."""
    if (out_dir / REPLACING).is_dir():
        move_back(out_dir)
    keep_new_run(out_dir)
    if not (out_dir / REPLACED).is_dir():
        return
    for entry in run_entries(out_dir):
        delete_entry(entry)
    (out_dir / REPLACED).rename(out_dir / REPLACING)
    move_back(out_dir)


@contextmanager
def locked_run(out_dir: Path) -> Iterator[Path]:
    """Hold the lock of `out_dir` for the block, after settling a replacement a killed writer left there."""
    with run_lock(out_dir):
        settle_replaced(out_dir)
        yield out_dir


@contextmanager
def replacing(out_dir: Path) -> Iterator[Path]:
    """Set the (locked) run in `out_dir` aside for the block, in which a new run starts there; at its end, however
    it ends, keep the new run if it wrote its first checkpoint, else restore the old one."""
    set_aside(out_dir)
    try:
        yield out_dir
    finally:
        settle_replaced(out_dir)


@contextmanager
def writing_run(name: str, resume: bool, overwrite: bool, results: Path = RESULTS) -> Iterator[Path]:
    """`results/<name>`, locked for the block and checked against `resume` / `overwrite`. With `overwrite` the
    old run is set aside for the block (`replacing`): a config the trainer refuses, or a run that fails before
    its first checkpoint, leaves the old run whole."""
    out_dir = results / check_run_name(name)
    check_inside(out_dir, results)
    if resume and not (out_dir / REPLACED).exists():  # refused before the lock creates the directory
        check_run_state(out_dir, resume, overwrite)
    if torchrun_env()[0] != 0:  # rank 0 locks and replaces for the whole job
        yield out_dir
        return
    with locked_run(out_dir):
        check_run_state(out_dir, resume, overwrite)
        if not overwrite:
            yield out_dir
            return
        with replacing(out_dir):
            yield out_dir


def train_run(config, out_dir: Path, resume: bool = False, verify: bool = True) -> RunOutcome:
    """Train `config` (its trainer: `trainer_for`) into `out_dir`, then evaluate the best checkpoint on the test
    split.

    The cache is opened once (`open_cache`) for the provenance and the splits. The run records its provenance
    (`provenance.json`, and in metrics.json); `resume` is refused on other data or with another config
    (`provenance.check_resume`). `verify`: hash the cache's shards and the resumed checkpoint. An old run set
    aside in `out_dir` (`replacing`) is deleted after the first epoch's checkpoint.
    """
    d = config.data
    opened = open_cache(Path(d.cache), verify)
    current = provenance.describe(opened, config)
    if resume:
        trained = provenance.recorded(out_dir)
        if trained is None:
            log.warning(f"{out_dir} records no provenance (an older run); its cache and split are not checked")
        else:
            provenance.check_resume(out_dir, config, trained, current)
    trainer_class = trainer_for(config)
    lazy = (
        (d.train_split,)
        if trainer_class.reads_train_lazily and d.train_split not in (d.val_split, d.test_split)
        else ()
    )
    splits = load_splits(opened, list(dict.fromkeys([d.train_split, d.val_split, d.test_split])), lazy=lazy)
    trainer = trainer_class(config, splits[d.train_split], splits[d.val_split], out_dir)
    if resume:
        trainer.resume(verify)
    if trainer.rank != 0:  # under torchrun, rank 0 alone writes checkpoints and reports
        return RunOutcome(trainer, trainer.run(), None)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    provenance.record(out_dir, current)
    result = trainer.run(lambda epoch, record: keep_new_run(out_dir))
    trainer.load_best()
    metrics = report_run(trainer, splits[d.test_split], d.test_split, out_dir, current)
    return RunOutcome(trainer, result, metrics)
