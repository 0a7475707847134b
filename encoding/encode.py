"""`xalign encode`: run frozen backbones once over a dataset into a sharded, resumable cache.

Shards hold `--shard-size` images each (with all their captions) and are written atomically;
rerunning the same command resumes at the first missing shard. Under torchrun each rank encodes
the shards `i` with `i % WORLD_SIZE == RANK`, giving the same cache as one process.
"""

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from encoding import cache
from encoding.backbones import load_image_backbone, load_text_backbone
from encoding.datasets import DATASETS, ImageRecord, open_image, read_dataset
from encoding.errors import BadInput
from encoding.runtime import autocast, library_versions, resolve_device, resolve_precision


class ImageFiles(Dataset):
    """Decodes and preprocesses one record's image; a failure is returned, not raised."""

    def __init__(self, records: list[ImageRecord], preprocess):
        self.records, self.preprocess = records, preprocess

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        try:
            image = open_image(self.records[index].path)
            sha1 = hashlib.sha1(image.tobytes()).hexdigest()
            return index, self.preprocess(image), sha1, None
        except Exception as err:  # any decode failure skips the image, with its reason
            return index, None, None, f"{type(err).__name__}: {err}"


def _collate(items):
    ok = [item for item in items if item[1] is not None]
    failed = [(index, reason) for index, pixels, _, reason in items if pixels is None]
    pixels = torch.stack([item[1] for item in ok]) if ok else None
    return [item[0] for item in ok], pixels, [item[2] for item in ok], failed


def encode_shard(records, image_model, text_model, args, device, precision, progress) -> cache.ShardData:
    """Encode one shard's images (DataLoader with workers) and their captions; L2-normalised."""
    loader = DataLoader(
        ImageFiles(records, image_model.preprocess),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=_collate,
    )
    kept, embeddings, hashes, skipped = [], [], [], []
    for indices, pixels, sha1s, failed in loader:
        if pixels is not None:
            with autocast(device, precision):
                embeddings.append(
                    F.normalize(image_model.encode(pixels.to(device, non_blocking=True)).float(), dim=-1).cpu()
                )
            kept += indices
            hashes += sha1s
        skipped += [{"image_id": records[i].image_id, "path": records[i].path, "reason": r} for i, r in failed]
        progress.update(len(indices) + len(failed))
    images = [records[i] for i in kept]
    captions = [(r.image_id, text) for r in images for text in r.captions]
    texts = [text for _, text in captions]
    text_embeddings = []
    for start in range(0, len(texts), args.batch_size):
        with autocast(device, precision):
            text_embeddings.append(
                F.normalize(text_model.encode(texts[start : start + args.batch_size]).float(), dim=-1).cpu()
            )
    return cache.ShardData(
        image_ids=[r.image_id for r in images],
        image_embeddings=torch.cat(embeddings).numpy() if embeddings else np.zeros((0, image_model.dim)),
        image_paths=[r.path for r in images],
        caption_image_ids=[image_id for image_id, _ in captions],
        caption_embeddings=torch.cat(text_embeddings).numpy() if text_embeddings else np.zeros((0, text_model.dim)),
        caption_text=texts,
        image_labels=None if any(r.label is None for r in records) else np.array([r.label for r in images]),
        image_splits=None if any(r.split is None for r in records) else [r.split for r in images],
        image_pixel_sha1=hashes,
        skipped=skipped,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign encode", description=__doc__)
    p.add_argument("--dataset", required=True, help=f"one of {DATASETS.names()}")
    p.add_argument("--root", required=True, type=Path, help="dataset root (images)")
    p.add_argument("--annotations", type=Path, help="annotation file (captions JSON / CSV)")
    p.add_argument("--image-model", required=True, help="e.g. open_clip:ViT-B-32@laion2b_s34b_b79k, timm:resnet18")
    p.add_argument("--text-model", required=True, help="e.g. st:intfloat/e5-large-v2")
    p.add_argument("--out", required=True, type=Path, help="cache directory")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=10000, help="images per shard")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored embedding dtype")
    p.add_argument("--limit", type=int, help="encode only the first N images (sorted by id)")
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--image-size", type=int, help="input size for backbones that accept any (timm)")
    p.add_argument("--text-prefix", default="", help="prepended to every caption (E5: 'passage: ')")
    return p


def _check_request(args) -> None:
    """Refuse, before loading anything, a rerun on DIR with other models or another dataset."""
    if not (args.out / cache.METADATA).exists():
        return
    meta = cache.read_metadata(args.out)
    asked = {"image_model": args.image_model, "text_model": args.text_model, "dataset": args.dataset}
    built = {
        "image_model": meta["image_model"]["spec"],
        "text_model": meta["text_model"]["spec"],
        "dataset": meta["dataset"]["kind"],
    }
    for key, value in asked.items():
        if built[key] != value:
            raise BadInput(f"{args.out / cache.METADATA}: cache was built with {key} '{built[key]}', not '{value}'")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "shard_size"):
        if getattr(args, name) < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 1")
    _check_request(args)
    records = read_dataset(args.dataset, args.root, args.annotations)
    records = records[: args.limit] if args.limit else records
    if not records:
        raise BadInput(f"{args.root}: dataset '{args.dataset}' has no images")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    image_options = {"image_size": args.image_size} if args.image_size else {}
    image_model = load_image_backbone(args.image_model, device, **image_options)
    text_model = load_text_backbone(args.text_model, device, prefix=args.text_prefix)
    if "random-init" in str(image_model.describe()["weights"]):
        print(f"note: {args.image_model} has no pretrained weights here; it is randomly initialised (seed 0)")
    num_shards = -(-len(records) // args.shard_size)
    header = {
        "dataset": {
            "kind": args.dataset,
            "root": str(args.root.resolve()),
            "annotations": None if args.annotations is None else str(args.annotations.resolve()),
            "limit": args.limit,
        },
        "image_model": {**image_model.describe(), "dtype": args.dtype, "normalized": True},
        "text_model": {**text_model.describe(), "dtype": args.dtype, "normalized": True},
        "shard_size": args.shard_size,
        "num_shards": num_shards,
        "versions": library_versions(),
    }
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cache.init_metadata(args.out, header)
    done = cache.finished_shards(args.out)
    todo = [i for i in range(num_shards) if i % world == rank and i not in done]
    total = sum(len(records[i * args.shard_size : (i + 1) * args.shard_size]) for i in todo)
    with tqdm(total=total, unit="img", desc=f"encode rank {rank}" if world > 1 else "encode", disable=None) as progress:
        for index in todo:
            shard = records[index * args.shard_size : (index + 1) * args.shard_size]
            data = encode_shard(shard, image_model, text_model, args, device, precision, progress)
            meta = cache.record_shard(args.out, cache.write_shard(args.out, index, data, dtype=args.dtype))
    meta = cache.read_metadata(args.out)
    state = "complete" if meta["complete"] else f"{len(meta['shards'])}/{num_shards} shards"
    print(
        f"{args.out}: {meta['num_images']} images, {meta['num_captions']} captions, "
        f"{len(meta['skipped'])} skipped ({state})"
    )
    return 0
