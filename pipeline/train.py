"""`xalign train CONFIG [--set key=value ...] [--resume]`: train a head pair on a cache.

Writes `results/<name>/` under the working directory: config.yaml, best.pt, last.pt,
history.jsonl, training_curves.png, metrics.json (test split) and run_info.json (cost side:
trainable parameters, wall time, peak memory).
"""

import argparse
import shutil
from pathlib import Path

import torch

from encoding.errors import BadInput
from pipeline.config import ExperimentConfig, load_config, save_config
from pipeline.data import load_splits
from pipeline.engine import Trainer, TrainResult
from pipeline.evaluate import metrics_table
from pipeline.report import report_run

RESULTS = Path("results")


def train(config: ExperimentConfig, out_dir: Path, resume: bool = False) -> tuple[Trainer, TrainResult, dict]:
    """Train, then evaluate the best checkpoint on the test split; returns (trainer, result, test metrics).

    Under torchrun only rank 0 reports; other ranks get `None` for the metrics.
    """
    d = config.data
    names = list(dict.fromkeys([d.train_split, d.val_split, d.test_split]))
    splits = load_splits(Path(d.cache), names)
    trainer = Trainer(config, splits[d.train_split], splits[d.val_split], out_dir)
    if resume:
        trainer.resume()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    result = trainer.run()
    if trainer.rank != 0:  # under torchrun, rank 0 alone writes checkpoints and reports
        return trainer, result, None
    best = torch.load(out_dir / "best.pt", map_location=trainer.device, weights_only=False)
    trainer.model.load_state_dict(best["model"])
    metrics = report_run(trainer, splits[d.test_split], d.test_split, out_dir)
    return trainer, result, metrics


def prepare_run_dir(name: str, resume: bool, overwrite: bool) -> Path:
    """`results/<name>`, checked against --resume / --overwrite (an existing run is never replaced silently)."""
    out_dir = RESULTS / name
    has_run = (out_dir / "last.pt").exists()
    if resume and not has_run:
        raise BadInput(f"{out_dir / 'last.pt'}: nothing to resume")
    if has_run and not (resume or overwrite):
        raise BadInput(f"{out_dir}: a run named '{name}' exists; pass --resume to continue it or --overwrite")
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign train", description=__doc__)
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from results/<name>/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, args.overrides)
    out_dir = prepare_run_dir(config.name, args.resume, args.overwrite)
    _, result, metrics = train(config, out_dir, resume=args.resume)
    if metrics is None:
        return 0
    print(
        f"{config.name}: best val rsum {result.best_rsum:.1f} at epoch {result.best_epoch} "
        f"({result.epochs_run} epochs, {sum(r['seconds'] for r in result.history):.1f}s)"
    )
    print(metrics_table(metrics))
    print(f"wrote {out_dir}")
    return 0
