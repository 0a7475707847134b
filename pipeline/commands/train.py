"""`xalign train CONFIG [--set key=value ...] [--resume]`: train a head pair on a cache.

Pooled heads read the cached embeddings; token heads (`attention_pool`, `token_transformer`,
`sparse_attention`, `cross_encoder`) read the cache's tokens (`xalign encode --tokens`).

Writes `results/<name>/` under the working directory: config.yaml (fully resolved), best.pt,
last.pt, checkpoints.json (their sha256, checked on every load), history.jsonl, training_curves.png,
metrics.json (test split) and run_info.json (cost side: trainable parameters, wall time, peak memory).
Prints a line per epoch. The run directory is locked while it is written: a second `xalign train` (or
`--resume`) of the same name exits 2 naming the first one's pid. `--overwrite` keeps the old run until
the new one has written its first checkpoint, and restores it when the new one fails before.
"""

import argparse

from pipeline.commands import naming_config, training_parser
from pipeline.config.experiment import load_config
from pipeline.reporting.tables import metrics_table
from pipeline.runs.directory import train_run, writing_run


def build_parser() -> argparse.ArgumentParser:
    return training_parser("xalign train", __doc__)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, args.overrides)
    with writing_run(config.name, args.resume, args.overwrite) as out_dir, naming_config(args.config):
        run = train_run(config, out_dir, args.resume, args.verify)
    if run.metrics is None:
        return 0
    result = run.result
    print(
        f"{config.name}: best val rsum {result.best_rsum:.1f} at epoch {result.best_epoch + 1} "
        f"({result.epochs_run} epochs, {sum(r['seconds'] for r in result.history):.1f}s)"
    )
    print(metrics_table(run.metrics))
    print(f"wrote {out_dir}")
    return 0
