"""`xalign encode`: run frozen backbones once over a dataset into a sharded, resumable cache.

Shards hold `--shard-size` images each (with all their captions) and are written atomically;
rerunning the same command resumes at the first missing shard and gives the same shards as an
uninterrupted run (batches never cross a shard boundary). Under torchrun each rank encodes the
shards `i` with `i % WORLD_SIZE == RANK`, giving the same cache as one process.
"""

import argparse
from pathlib import Path

from encoding.datasets import DATASETS
from encoding.encode import EncodeRequest, encode_cache, summary
from encoding.runtime import torchrun_env


def build_parser() -> argparse.ArgumentParser:
    """Flags map one to one onto `EncodeRequest` fields; an omitted flag takes the field's default."""
    p = argparse.ArgumentParser(prog="xalign encode", description=__doc__, argument_default=argparse.SUPPRESS)
    p.add_argument("--dataset", required=True, help=f"one of {DATASETS.names()}")
    p.add_argument("--root", required=True, type=Path, help="dataset root (images)")
    p.add_argument("--annotations", type=Path, help="annotation file (captions JSON / CSV / JSONL)")
    p.add_argument("--pairs", action="store_true", help="cifar100: side-by-side image pairs")
    p.add_argument("--image-model", required=True, help="e.g. open_clip:ViT-B-32@laion2b_s34b_b79k, timm:resnet18")
    p.add_argument("--text-model", required=True, help="e.g. st:intfloat/e5-large-v2, decoder:PATH")
    p.add_argument("--out", required=True, type=Path, help="cache directory")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--shard-size", type=int, help="images per shard")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (torchrun: auto → cuda:LOCAL_RANK)")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--dtype", choices=["float16", "float32"], help="stored embedding dtype")
    p.add_argument("--limit", type=int, help="encode only the first N images (sorted by id)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--image-size", type=int, help="input size for backbones that accept any (timm, open_clip)")
    p.add_argument("--text-prefix", help="prepended to every caption (default: the model's own, E5: 'query: ')")
    p.add_argument("--text-instruction", help="decoder models: caption becomes 'Instruct: TEXT\\nQuery: caption'")
    p.add_argument(
        "--tokens", action="store_true", help="also store image tokens and caption hidden states (token caches)"
    )
    p.add_argument("--image-tokens", type=int, help="with --tokens: average-pool each image's token grid to N = s*s")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    meta = encode_cache(EncodeRequest(**vars(args)))
    if torchrun_env()[0] == 0:  # one line per job, from rank 0
        print(summary(args.out, meta))
    return 0
