"""`xalign bench train --stream` (pooled heads) and `--tokens` (token heads): training streamed from the shards
vs held in memory, and the peak memory of streaming as the cache grows.

On a synthetic cache written through the real cache writer (pooled embeddings, plus tokens with
`--tokens`): the engine's epoch loop over the same head with the inputs in memory (the limit here: no
reads) and streamed from the HDF5 shards (`data.stream: true`), alternated `--repeats` times after a
warm-up, as median pairs per second and their ratio (`streamed_vs_memory`, target >= 0.8). Then, for each of
`--rss-images`, a fresh process trains one streamed epoch over a cache of that size and reports its
peak resident memory next to the cache's size: flat peak memory over a cache several times larger
shows the inputs never all load. Prints one JSON object last.
"""

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from encoding import cache
from encoding.errors import BadInput
from encoding.runtime import timed
from pipeline.bench.arguments import positive_list, require_positive
from pipeline.bench.fresh_process import fresh_process_result
from pipeline.config.experiment import from_dict
from pipeline.data.split_tensors import load_splits
from pipeline.training.choice import trainer_for

HELD_OUT = 64  # images in each of val and test


def model_entry(spec: str, dim: int, tokens: dict | None) -> dict:
    return {"spec": spec, "dim": dim, "dtype": "float16", "normalized": True, "weights": "none", **(tokens or {})}


def synthetic_tokens(rng: np.random.Generator, args, n: int, m: int) -> dict:
    """Random float16 tokens of n images and m captions (1..L real caption tokens each), as ShardData fields."""
    half = {"dtype": np.float32}
    return {
        "image_tokens": rng.standard_normal((n, args.image_tokens, args.dim), **half).astype(np.float16),
        "caption_tokens": rng.standard_normal((m, args.text_tokens, args.dim), **half).astype(np.float16),
        "caption_token_mask": np.arange(args.text_tokens)[None, :] < rng.integers(4, args.text_tokens + 1, (m, 1)),
    }


def write_bench_cache(cache_dir: Path, args, num_images: int, split: bool = True) -> Path:
    """A synthetic cache of `num_images` images (and, with `split`, its split) in `cache_dir`, shard by shard:
    pooled embeddings of `--image-dim`/`--text-dim`, plus tokens of `--dim` with `--tokens`."""
    rng = np.random.default_rng(0)
    shard_size, per_image, tokens = args.shard_size, args.captions_per_image, args.tokens
    image_tokens = {"token_dim": args.dim, "num_tokens": args.image_tokens} if tokens else None
    text_tokens = {"token_dim": args.dim, "max_tokens": args.text_tokens} if tokens else None
    header = {
        "dataset": {"kind": "synthetic", "root": str(cache_dir), "annotations": None, "limit": None},
        "image_model": model_entry("synthetic:image", args.image_dim, image_tokens),
        "text_model": model_entry("synthetic:text", args.text_dim, text_tokens),
        **({"tokens": {"image_tokens": args.image_tokens}} if tokens else {}),
        "shard_size": shard_size,
        "num_shards": -(-num_images // shard_size),
        "versions": {},
    }
    cache.init_metadata(cache_dir, header)
    shards = range(0, num_images, shard_size)
    for index, first in enumerate(tqdm(shards, desc=f"writing a {num_images}-image cache", disable=None)):
        n = min(shard_size, num_images - first)
        ids = [f"img{i:07d}" for i in range(first, first + n)]
        m = n * per_image
        tokens_of = synthetic_tokens(rng, args, n, m) if tokens else {}
        image = rng.standard_normal((n, args.image_dim), dtype=np.float32)
        own = np.repeat(image[:, np.arange(args.text_dim) % args.image_dim], per_image, axis=0)
        data = cache.ShardData(  # each caption: its image's first dims plus noise, so there is something to learn
            image_ids=ids,
            image_embeddings=image,
            image_paths=[""] * n,
            caption_image_ids=[i for i in ids for _ in range(per_image)],
            caption_embeddings=own + rng.standard_normal((m, args.text_dim), dtype=np.float32),
            caption_text=[""] * m,
            **tokens_of,
        )
        cache.record_shard(cache_dir, cache.write_shard(cache_dir, index, data))
    if not split:
        return cache_dir
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
    token_options = {"num_heads": 4, "num_layers": 1} if args.tokens else {}
    config = from_dict(
        {
            "name": "bench",
            "data": {"cache": str(cache_dir), "stream": stream},
            "model": {"type": args.head, "output_dim": 128, "hidden_dim": args.hidden_dim, **token_options},
            "training": {"batch_size": args.batch_size, "device": args.device, "num_epochs": 1, "warmup_steps": 0},
        }
    )
    splits = load_splits(cache_dir, ["train", "val"], verify=False, lazy=("train",))
    run = trainer_for(config)(config, splits["train"], splits["val"])
    run.log_epochs = False
    return run


def cache_mb(cache_dir: Path) -> float:
    return sum(f.stat().st_size for f in cache_dir.glob("shard-*.h5")) / 2**20


def streamed_epoch_peak_rss(cache_dir: Path, args) -> float:
    """Peak RSS (MB) of a fresh process training one streamed epoch on `cache_dir`."""
    argv = [sys.executable, "-m", "pipeline.bench.streaming", "--rss-child", str(cache_dir), *args.passed]
    return fresh_process_result(argv, f"bench train {args.flag} peak-memory worker")["peak_rss_mb"]


DEFAULTS = {  # per mode: what differs between pooled and token heads
    "--stream": {
        "images": 40_000,
        "head": "mlp",
        "hidden_dim": 1024,
        "batch_size": 1024,
        "steps": 150,
        "rss_images": "20000,160000",
    },
    "--tokens": {
        "images": 4000,
        "head": "attention_pool",
        "hidden_dim": 64,
        "batch_size": 256,
        "steps": 60,
        "rss_images": "2000,16000",
    },
}


def build_parser(flag: str) -> argparse.ArgumentParser:
    d = DEFAULTS[flag]
    p = argparse.ArgumentParser(prog=f"xalign bench train {flag}", description=__doc__)
    p.add_argument("--images", type=int, default=d["images"], help="images of the throughput cache")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--image-dim", type=int, default=512, help="pooled image embedding dims")
    p.add_argument("--text-dim", type=int, default=384, help="pooled caption embedding dims")
    p.add_argument("--image-tokens", type=int, default=49, help="--tokens: image tokens")
    p.add_argument("--text-tokens", type=int, default=32, help="--tokens: caption tokens at most")
    p.add_argument("--dim", type=int, default=256, help="--tokens: token dims (image and text)")
    p.add_argument("--hidden-dim", type=int, default=d["hidden_dim"])
    p.add_argument("--head", default=d["head"], help="the head's model.type")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    p.add_argument("--steps", type=int, default=d["steps"], help="timed steps per loop")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed loops of each, alternated; medians reported")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--rss-images", default=d["rss_images"], help="cache sizes (images) of the peak-memory runs; '' = skip"
    )
    p.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flag = "--tokens" if "--tokens" in argv else "--stream"
    argv = [a for a in argv if a not in ("--tokens", "--stream")]
    args = build_parser(flag).parse_args(argv)
    args.flag, args.tokens = flag, flag == "--tokens"
    args.passed = [flag, *(a for a in argv if a not in ("--rss-child", str(args.rss_child)))]
    numbers = ("images", "captions_per_image", "image_dim", "text_dim", "image_tokens", "text_tokens", "dim")
    require_positive(args, (*numbers, "hidden_dim", "batch_size", "shard_size", "steps", "warmup", "repeats"))
    sizes = positive_list("--rss-images", args.rss_images, "20000,160000", allow_empty=True)
    if args.rss_child is not None:
        run = trainer(args.rss_child, args, stream=True)
        run.train_epoch(0)
        print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return 0
    if (args.images - 2 * HELD_OUT) * args.captions_per_image < args.batch_size * (args.steps + args.warmup):
        raise BadInput(
            f"bench train {flag}: --images {args.images} hold fewer training captions (after 128 held out) than "
            "(steps + warmup) x batch size"
        )
    with tempfile.TemporaryDirectory(prefix="xalign-bench-stream-") as tmp:
        cache_dir = write_bench_cache(Path(tmp) / "cache", args, args.images)
        runs = {"memory": trainer(cache_dir, args, False), "streamed": trainer(cache_dir, args, True)}
        figures = {name: [] for name in runs}
        for repeat in range(args.repeats):  # alternated, so both see the same machine load
            for name, run in runs.items():
                run.train_epoch(0, max_batches=args.warmup)
                seconds = timed(lambda: run.train_epoch(1 + repeat, max_batches=args.steps), run.device)  # noqa: B023
                figures[name].append(args.steps * run.batch_size / seconds)
        figures = {name: statistics.median(values) for name, values in figures.items()}
        memory = []
        for size in sizes:
            sized = write_bench_cache(Path(tmp) / f"rss-{size}", args, size)
            memory.append(
                {"images": size, "cache_mb": cache_mb(sized), "peak_rss_mb": streamed_epoch_peak_rss(sized, args)}
            )
    result = {
        "streamed_pairs_per_s": figures["streamed"],
        "memory_pairs_per_s": figures["memory"],
        "streamed_vs_memory": figures["streamed"] / figures["memory"],
        "streamed_peak_rss": memory,
        "device": str(run.device),
        "head": args.head,
        "images": args.images,
        "captions": args.images * args.captions_per_image,
        "dims": [args.image_dim, args.text_dim],
        **(
            {"image_tokens": args.image_tokens, "text_tokens": args.text_tokens, "dim": args.dim} if args.tokens else {}
        ),
        "batch_size": run.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
