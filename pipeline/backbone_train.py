"""`xalign backbone-train CONFIG [--set key=value ...] [--resume] [--bench]`: train an image encoder end to end.

The caption side is frozen: its embeddings come from the cache `data.cache` (made by `xalign encode`),
whose `splits.json` decides which images train, validate and test. Writes `results/<name>/` under the
working directory: config.yaml, best.pt (the encoder: `xalign encode --image-model results/<name>/best.pt`),
last.pt (for `--resume`), history.jsonl, training_curves.png (each epoch), metrics.json (test split,
best checkpoint) and run_info.json. `--bench` prints training-step throughput as JSON instead.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from encoding.errors import BadInput
from pipeline.backbone.config import BackboneConfig, from_dict
from pipeline.backbone.trainer import BackboneTrainer
from pipeline.config import load_config, save_config
from pipeline.data import load_splits
from pipeline.evaluate import metrics_table
from pipeline.train import prepare_run_dir

RESULTS = Path("results")


def load_data(config: BackboneConfig) -> dict:
    """The config's train/val/test splits of the cache (caption embeddings, image paths)."""
    d = config.data
    return load_splits(Path(d.cache), list(dict.fromkeys([d.train_split, d.val_split, d.test_split])))


def train(config: BackboneConfig, out_dir: Path, resume: bool = False) -> tuple[BackboneTrainer, dict]:
    """Train, then evaluate the best checkpoint on the test split; returns (trainer, test metrics)."""
    d = config.data
    splits = load_data(config)
    trainer = BackboneTrainer(config, splits[d.train_split], splits[d.val_split], out_dir)
    if resume:
        trainer.resume()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    best = torch.load(out_dir / "best.pt", map_location=trainer.device, weights_only=True)
    trainer.encoder.load_state_dict(best["encoder"])
    metrics = {"split": d.test_split, **trainer.evaluate(splits[d.test_split])}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    run_info = {
        "trainable_parameters": trainer.trainable_parameters(),
        "train_seconds_this_invocation": seconds,
        "train_seconds_all_epochs": sum(r["seconds"] for r in trainer.history),
        "best_epoch": trainer.best_epoch,
        "epochs_run": trainer.epoch,
        "device": str(trainer.device),
        "precision": trainer.precision,
        "train_images": len(splits[d.train_split].image_paths),
    }
    (out_dir / "run_info.json").write_text(json.dumps(run_info, indent=2))
    return trainer, metrics


def bench(config: BackboneConfig, steps: int) -> dict:
    from pipeline.backbone.bench import bench_training_step

    splits = load_data(config)
    trainer = BackboneTrainer(config, splits[config.data.train_split], splits[config.data.val_split])
    return bench_training_step(trainer, steps)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign backbone-train", description=__doc__)
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from results/<name>/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    p.add_argument("--bench", action="store_true", help="print training-step throughput as JSON; trains nothing")
    p.add_argument("--bench-steps", type=int, default=10, help="timed batches per loop with --bench")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, args.overrides, validate=from_dict)
    if args.bench:
        if args.bench_steps < 1:
            raise BadInput("--bench-steps must be >= 1")
        print(json.dumps(bench(config, args.bench_steps)))
        return 0
    out_dir = prepare_run_dir(config.name, args.resume, args.overwrite)
    trainer, metrics = train(config, out_dir, resume=args.resume)
    print(
        f"{config.name}: best val rsum {trainer.best_rsum:.1f} at epoch {trainer.best_epoch} ({trainer.epoch} epochs)"
    )
    print(metrics_table(metrics, with_chance=True))
    print(f"wrote {out_dir}; encode with it: xalign encode --image-model {out_dir / 'best.pt'} ...")
    return 0
