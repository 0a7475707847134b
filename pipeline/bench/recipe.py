"""`xalign bench recipe CONFIG`: a head recipe's first steps at its own batch size, time and peak memory.

Writes a synthetic cache of the dims given (`--image-dim`, `--text-dim`; the papers': FuseMix 1536/1024,
SAIL 1024/4096) through the cache writer with enough captions for `--steps` global batches of the
config's `training.batch_size`, then, in a fresh process (so its peak memory is its own), builds the
config's trainer on it (`data.cache` and `training.device` replaced, `--set` overrides applied) and times
each of `--steps` optimizer steps (`train_epoch(e, max_batches=1)`). Prints one JSON object last: seconds
per step and the process's peak RSS.
"""

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline.bench.arguments import require_positive
from pipeline.bench.fresh_process import fresh_process_result
from pipeline.bench.streaming import HELD_OUT, write_bench_cache
from pipeline.config.experiment import load_config
from pipeline.data.split_tensors import load_splits
from pipeline.training.choice import trainer_for


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench recipe", description=__doc__)
    p.add_argument("config", type=Path, help="a head config, e.g. configs/heads/fusemix.yaml")
    p.add_argument("--image-dim", type=int, default=1536)
    p.add_argument("--text-dim", type=int, default=1024)
    p.add_argument("--captions-per-image", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="timed optimizer steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dir", type=Path, help="where the cache goes (default: a temporary directory, removed after)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return p


def recipe_config(args, cache_dir: Path):
    overrides = [*args.overrides, f"data.cache={cache_dir}", f"training.device={args.device}"]
    return load_config(args.config, [*overrides, "data.stream=false"])


def timed_steps(args) -> dict:
    """In the worker: the trainer on `args.child`, `--steps` steps timed one by one."""
    config = recipe_config(args, args.child)
    splits = load_splits(args.child, ["train", "val"], verify=False)
    trainer = trainer_for(config)(config, splits["train"], splits["val"])
    seconds = []
    for step in range(args.steps):
        start = time.perf_counter()
        trainer.train_epoch(step, max_batches=1)
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds_per_step": seconds, "peak_rss_gib": peak, "batch_size": trainer.batch_size}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(timed_steps(args)))
        return 0
    require_positive(args, ("image_dim", "text_dim", "captions_per_image", "steps"))
    batch = load_config(args.config, args.overrides).training.batch_size
    args.tokens, args.shard_size = False, 10_000
    images = -(-batch * args.steps // args.captions_per_image) + 2 * HELD_OUT
    with tempfile.TemporaryDirectory(prefix="xalign-bench-recipe-", dir=args.dir) as tmp:
        cache_dir = write_bench_cache(Path(tmp) / "cache", args, images)
        child = [sys.executable, "-m", "pipeline.bench.recipe", *argv, "--child", str(cache_dir)]
        result = fresh_process_result(child, "bench recipe worker")
    result.update(
        config=str(args.config),
        dims=[args.image_dim, args.text_dim],
        train_pairs=(images - 2 * HELD_OUT) * args.captions_per_image,
        device=args.device,
        torch_threads=torch.get_num_threads(),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
