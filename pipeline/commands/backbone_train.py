"""`xalign backbone-train CONFIG [--set key=value ...] [--resume] [--overwrite] [--bench]`: train an image
encoder end to end, and with `model.text` a text tower too (two-tower mode).

The cache `data.cache` (made by `xalign encode`) gives the images, the caption texts and their frozen
embeddings (the caption side when there is no `model.text`); its `splits.json` decides which images
train, validate and test. Writes `results/<name>/` under the working directory, as `xalign train` does
(`--overwrite` included): config.yaml, best.pt (the encoder: `xalign encode --image-model
results/<name>/best.pt`), last.pt (for `--resume`), checkpoints.json (their sha256), history.jsonl,
training_curves.png, metrics.json (test split, best checkpoint), figures and run_info.json. `--bench`
prints training-step throughput as JSON instead.
"""

import argparse
import json
from pathlib import Path

from encoding.errors import BadInput
from pipeline.bench.backbone import bench_training_step
from pipeline.commands import naming_config, training_parser
from pipeline.config.backbone import from_dict
from pipeline.config.experiment import load_config
from pipeline.data.split_tensors import load_splits
from pipeline.reporting.tables import metrics_table
from pipeline.runs.directory import train_run, writing_run
from pipeline.training.choice import trainer_for


def build_parser() -> argparse.ArgumentParser:
    p = training_parser("xalign backbone-train", __doc__)
    p.add_argument("--bench", action="store_true", help="print training-step throughput as JSON; trains nothing")
    p.add_argument("--bench-steps", type=int, default=10, help="timed batches per loop with --bench")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, args.overrides, validate=from_dict)
    if args.bench:
        if args.bench_steps < 1:
            raise BadInput("--bench-steps must be >= 1")
        d = config.data
        splits = load_splits(Path(d.cache), list(dict.fromkeys([d.train_split, d.val_split])), args.verify)
        trainer = trainer_for(config)(config, splits[d.train_split], splits[d.val_split])
        print(json.dumps(bench_training_step(trainer, args.bench_steps)))
        return 0
    with writing_run(config.name, args.resume, args.overwrite) as out_dir, naming_config(args.config):
        run = train_run(config, out_dir, args.resume, args.verify)
    if run.metrics is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    result = run.result
    print(
        f"{config.name}: best val rsum {result.best_rsum:.1f} at epoch {result.best_epoch + 1} "
        f"({result.epochs_run} epochs)"
    )
    print(metrics_table(run.metrics, with_chance=True))
    text = f" --text-model {out_dir / 'best.pt'}" if config.model.text is not None else ""
    print(f"wrote {out_dir}; encode with it: xalign encode --image-model {out_dir / 'best.pt'}{text} ...")
    return 0
