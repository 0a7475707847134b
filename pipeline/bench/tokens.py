"""`xalign bench train --tokens`: token-head training streamed from the shards vs held in memory, and the
peak memory of streaming as the cache grows.

On a synthetic token cache written through the real cache writer: the engine's epoch loop over the
same token head with the tokens in memory (the limit here: no reads) and streamed from the HDF5
shards (`data.stream: true`), one after another after a warm-up, as pairs per second and their ratio
(`streamed_vs_memory`, target >= 0.8). Then, for each of `--rss-images`, a fresh process trains one
streamed epoch over a cache of that size and reports its peak resident memory next to the cache's
token bytes: flat peak memory over a cache several times larger shows the tokens never all load.
Prints one JSON object last.
"""

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from encoding import cache
from encoding.errors import BadInput
from encoding.runtime import timed
from pipeline.bench.fresh_process import fresh_process_result
from pipeline.config.experiment import from_dict
from pipeline.data.split_tensors import load_splits
from pipeline.training.choice import trainer_for

HELD_OUT = 64  # images in each of val and test


def write_token_cache(cache_dir: Path, args, num_images: int) -> Path:
    """A synthetic token cache of `num_images` images (and its split) in `cache_dir`, shard by shard."""
    rng = np.random.default_rng(0)
    shard_size, per_image = 1000, args.captions_per_image
    header = {
        "dataset": {"kind": "synthetic", "root": str(cache_dir), "annotations": None, "limit": None},
        "image_model": {
            "spec": "synthetic:image",
            "dim": args.dim,
            "dtype": "float16",
            "normalized": True,
            "weights": "none",
            "token_dim": args.dim,
            "num_tokens": args.image_tokens,
        },
        "text_model": {
            "spec": "synthetic:text",
            "dim": args.dim,
            "dtype": "float16",
            "normalized": True,
            "weights": "none",
            "token_dim": args.dim,
            "max_tokens": args.text_tokens,
        },
        "tokens": {"image_tokens": args.image_tokens},
        "shard_size": shard_size,
        "num_shards": -(-num_images // shard_size),
        "versions": {},
    }
    cache.init_metadata(cache_dir, header)
    for index, first in enumerate(range(0, num_images, shard_size)):
        n = min(shard_size, num_images - first)
        ids = [f"img{i:07d}" for i in range(first, first + n)]
        m = n * per_image
        data = cache.ShardData(
            image_ids=ids,
            image_embeddings=rng.standard_normal((n, args.dim), dtype=np.float32),
            image_paths=[""] * n,
            caption_image_ids=[i for i in ids for _ in range(per_image)],
            caption_embeddings=rng.standard_normal((m, args.dim), dtype=np.float32),
            caption_text=[""] * m,
            image_tokens=rng.standard_normal((n, args.image_tokens, args.dim), dtype=np.float32).astype(np.float16),
            caption_tokens=rng.standard_normal((m, args.text_tokens, args.dim), dtype=np.float32).astype(np.float16),
            caption_token_mask=np.arange(args.text_tokens)[None, :] < rng.integers(4, args.text_tokens + 1, (m, 1)),
        )
        cache.record_shard(cache_dir, cache.write_shard(cache_dir, index, data))
    ids = [f"img{i:07d}" for i in range(num_images)]
    cache.write_splits(
        cache_dir,
        {
            "seed": 0,
            "method": "synthetic",
            "val": ids[:HELD_OUT],
            "test": ids[HELD_OUT : 2 * HELD_OUT],
            "train": ids[2 * HELD_OUT :],
            "tuning": [],
        },
    )
    return cache_dir


def trainer(cache_dir: Path, args, stream: bool):
    config = from_dict(
        {
            "name": "bench",
            "data": {"cache": str(cache_dir), "stream": stream},
            "model": {
                "type": args.head,
                "output_dim": 128,
                "hidden_dim": args.hidden_dim,
                "num_heads": 4,
                "num_layers": 1,
            },
            "training": {"batch_size": args.batch_size, "device": args.device, "num_epochs": 1, "warmup_steps": 0},
        }
    )
    splits = load_splits(cache_dir, ["train", "val"], verify=False)
    run = trainer_for(config)(config, splits["train"], splits["val"])
    run.log_epochs = False
    return run


def token_mb(cache_dir: Path) -> float:
    return sum(f.stat().st_size for f in cache_dir.glob("shard-*.h5")) / 2**20


def streamed_epoch_peak_rss(cache_dir: Path, args) -> float:
    """Peak RSS (MB) of a fresh process training one streamed epoch on `cache_dir`."""
    argv = [sys.executable, "-m", "pipeline.bench.tokens", "--rss-child", str(cache_dir), *args.passed]
    return fresh_process_result(argv, "bench train --tokens peak-memory worker")["peak_rss_mb"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench train --tokens", description=__doc__)
    p.add_argument("--images", type=int, default=4000, help="images of the throughput cache")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--image-tokens", type=int, default=49)
    p.add_argument("--text-tokens", type=int, default=32)
    p.add_argument("--dim", type=int, default=256, help="token dims (image and text)")
    p.add_argument("--hidden-dim", type=int, default=64)
    p.add_argument("--head", default="attention_pool", help="a token head's model.type")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps per loop")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--rss-images", default="2000,16000", help="cache sizes (images) of the peak-memory runs; '' = skip")
    p.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--tokens"]
    args = build_parser().parse_args(argv)
    args.passed = [a for a in argv if a not in ("--rss-child", str(args.rss_child))]
    if args.rss_child is not None:
        run = trainer(args.rss_child, args, stream=True)
        run.train_epoch(0)
        print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return 0
    if args.images < 2 * HELD_OUT + args.batch_size * (args.steps + args.warmup):
        raise BadInput(
            f"bench train --tokens: --images {args.images} is fewer than 128 + (steps + warmup) x batch size"
        )
    sizes = [int(s) for s in args.rss_images.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="xalign-bench-tokens-") as tmp:
        cache_dir = write_token_cache(Path(tmp) / "cache", args, args.images)
        figures = {}
        for name, stream in (("memory", False), ("streamed", True)):
            run = trainer(cache_dir, args, stream)
            run.train_epoch(0, max_batches=args.warmup)
            seconds = timed(lambda: run.train_epoch(1, max_batches=args.steps), run.device)  # noqa: B023
            figures[name] = args.steps * run.batch_size / seconds
        memory = []
        for size in sizes:
            sized = write_token_cache(Path(tmp) / f"rss-{size}", args, size)
            memory.append(
                {"images": size, "token_mb": token_mb(sized), "peak_rss_mb": streamed_epoch_peak_rss(sized, args)}
            )
    result = {
        "streamed_pairs_per_s": figures["streamed"],
        "memory_pairs_per_s": figures["memory"],
        "streamed_vs_memory": figures["streamed"] / figures["memory"],
        "streamed_peak_rss": memory,
        "device": str(run.device),
        "head": args.head,
        "images": args.images,
        "image_tokens": args.image_tokens,
        "text_tokens": args.text_tokens,
        "dim": args.dim,
        "batch_size": run.batch_size,
        "steps": args.steps,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
