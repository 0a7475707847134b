"""Run directories (`results/<name>/`) and a training run end to end: train, reload the best
checkpoint, report on the test split.

A run's name is one path component (letters, digits, `._-`); an existing run is never replaced
silently: continuing it takes `resume`, replacing it `overwrite`, and only `results/<name>/` itself is
ever deleted.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

from encoding.errors import BadInput
from pipeline.config import save_config
from pipeline.data import load_splits
from pipeline.report import report_run
from pipeline.schema import check_run_name
from pipeline.training.loop import Trainer, TrainResult

RESULTS = Path("results")


@dataclass
class RunOutcome:
    trainer: Trainer
    result: TrainResult
    metrics: dict | None  # test metrics; None on torchrun ranks other than 0


def prepare_run_dir(name: str, resume: bool, overwrite: bool, results: Path = RESULTS) -> Path:
    """`results/<name>`, checked against `resume` / `overwrite`."""
    out_dir = results / check_run_name(name)
    has_run = (out_dir / "last.pt").exists()
    if resume and overwrite:
        raise BadInput("--resume and --overwrite exclude each other")
    if resume and not has_run:
        raise BadInput(f"{out_dir / 'last.pt'}: nothing to resume")
    if has_run and not (resume or overwrite):
        raise BadInput(f"{out_dir}: a run named '{name}' exists; pass --resume to continue it or --overwrite")
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    return out_dir


def train_run(trainer_class: type[Trainer], config, out_dir: Path, resume: bool = False) -> RunOutcome:
    """Train `config` with `trainer_class` into `out_dir`, then evaluate the best checkpoint on the test split."""
    d = config.data
    splits = load_splits(Path(d.cache), list(dict.fromkeys([d.train_split, d.val_split, d.test_split])))
    trainer = trainer_class(config, splits[d.train_split], splits[d.val_split], out_dir)
    if resume:
        trainer.resume()
    if trainer.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    result = trainer.run()
    if trainer.rank != 0:  # under torchrun, rank 0 alone writes checkpoints and reports
        return RunOutcome(trainer, result, None)
    trainer.load_best()
    return RunOutcome(trainer, result, report_run(trainer, splits[d.test_split], d.test_split, out_dir))
