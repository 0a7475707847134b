"""`xalign bench train`: the engine's epoch loop against the limit and the naive DataLoader loop.

Three loops in one process over the same synthetic in-memory cache and the same head pair, each
after a warm-up: the engine (`HeadTrainer.train_epoch`: index permutation, batch gather, step), the
limit (`HeadTrainer.train_step` on one batch prepared beforehand), and the naive loop (a per-sample
Dataset behind a shuffled DataLoader, collated each step). Prints one JSON object last.
`--stream` (pooled heads) and `--tokens` (token heads) run the streamed-vs-in-memory benchmark instead
(`pipeline.bench.streaming`).
"""

import argparse
import json
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from encoding.errors import BadInput
from encoding.runtime import timed
from pipeline.config.experiment import from_dict
from pipeline.data.split_tensors import SplitTensors
from pipeline.training.pooled_heads import HeadTrainer


class CaptionPairs(Dataset):
    """Per-sample indexing: (image embedding, caption embedding, image row) of caption i."""

    def __init__(self, split: SplitTensors):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.text)

    def __getitem__(self, i: int):
        row = self.split.caption_image_index[i]
        return self.split.image[row], self.split.text[i], row


def synthetic_split(images: int, captions: int, image_dim: int, text_dim: int, seed: int = 0) -> SplitTensors:
    """Random embeddings; caption j belongs to image j % images."""
    g = torch.Generator().manual_seed(seed)
    index = torch.arange(captions) % images
    return SplitTensors(
        image=torch.randn(images, image_dim, generator=g),
        text=torch.randn(captions, text_dim, generator=g),
        caption_image_index=index,
        image_ids=np.array([f"img{i}" for i in range(images)], dtype=object),
        captions=np.array([""] * captions, dtype=object),
        image_paths=np.array([""] * images, dtype=object),
    )


def _timed(run, steps: int, batch: int, device: torch.device) -> float:
    """Pairs per second of `run(steps)`."""
    return steps * batch / timed(lambda: run(steps), device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench train", description=__doc__)
    p.add_argument("--images", type=int, default=118_000)
    p.add_argument("--captions", type=int, default=590_000)
    p.add_argument("--image-dim", type=int, default=1152)
    p.add_argument("--text-dim", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="timed steps per loop")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each loop")
    p.add_argument("--device", default="auto")
    p.add_argument("--head", default="mlp", help="model.type of the head pair")
    p.add_argument("--stream", action="store_true", help="pooled heads: streamed vs in-memory (see its own --help)")
    p.add_argument("--tokens", action="store_true", help="token heads: streamed vs in-memory (see its own --help)")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--tokens" in argv or "--stream" in argv:
        from pipeline.bench import streaming

        return streaming.main(argv)
    args = build_parser().parse_args(argv)
    if min(args.images, args.captions, args.batch_size, args.steps) < 1:
        raise BadInput("bench train: --images, --captions, --batch-size and --steps must be >= 1")
    if args.captions < args.batch_size * (args.steps + args.warmup):
        raise BadInput(f"bench train: --captions {args.captions} is fewer than (steps + warmup) x batch size")
    split = synthetic_split(args.images, args.captions, args.image_dim, args.text_dim)
    config = from_dict(
        {
            "name": "bench",
            "model": {"type": args.head, "output_dim": 512, "hidden_dim": 1024},
            "training": {
                "batch_size": args.batch_size,
                "device": args.device,
                "epoch_sampling": "caption",
                "num_epochs": 1,
                "warmup_steps": 0,
            },
        }
    )
    trainer = HeadTrainer(config, split, split)
    trainer.log_epochs = False
    device, batch = trainer.device, trainer.batch_size

    def engine(steps: int) -> None:
        trainer.train_epoch(0, max_batches=steps)

    rows, captions = trainer.epoch_order(1)
    ready = (*trainer.batch_inputs(rows[:batch], captions[:batch]), None)

    def limit(steps: int) -> None:
        for _ in range(steps):
            trainer.train_step(ready)

    loader = DataLoader(CaptionPairs(split), batch_size=batch, shuffle=True, drop_last=True)

    def naive(steps: int) -> None:
        for step, (image, text, ids) in enumerate(loader):
            if step == steps:
                break
            trainer.train_step((image.to(device), text.to(device), ids.to(device), None))

    trainer.model.train()
    figures = {}
    for name, run in (("engine", engine), ("limit", limit), ("naive", naive)):
        run(args.warmup)
        figures[name] = _timed(run, args.steps, batch, device)
    result = {
        "engine_pairs_per_s": figures["engine"],
        "naive_pairs_per_s": figures["naive"],
        "limit_pairs_per_s": figures["limit"],
        "engine_vs_limit": figures["engine"] / figures["limit"],
        "engine_vs_naive": figures["engine"] / figures["naive"],
        "device": str(device),
        "precision": trainer.precision,
        "images": args.images,
        "captions": args.captions,
        "image_dim": args.image_dim,
        "text_dim": args.text_dim,
        "batch_size": batch,
        "steps": args.steps,
        "head": args.head,
    }
    print(json.dumps(result))
    return 0
