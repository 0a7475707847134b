"""`xalign encode`: run frozen backbones once over a dataset into a sharded, resumable cache.

Shards hold `--shard-size` images each (with all their captions) and are written atomically;
rerunning the same command resumes at the first missing shard and gives the same shards as an
uninterrupted run (batches never cross a shard boundary). Under torchrun each rank encodes the
shards `i` with `i % WORLD_SIZE == RANK`, giving the same cache as one process.
"""

import argparse
import functools
import hashlib
import itertools
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from encoding import cache
from encoding.backbones import load_image_backbone, load_text_backbone
from encoding.datasets import DATASETS, ImageRecord, open_image, read_dataset
from encoding.errors import BadInput
from encoding.runtime import autocast, distributed, library_versions, resolve_device, resolve_precision

E5_INSTRUCTION = "Instruct: {}\nQuery: "


class ImageFiles(Dataset):
    """Decodes and preprocesses one record's image; a decode failure is returned with its reason."""

    def __init__(self, records: list[ImageRecord], preprocess):
        self.records, self.preprocess = records, preprocess

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        try:
            image = open_image(self.records[index].path)
        except Exception as err:  # unreadable, truncated or not an image: skipped, with the reason
            return index, None, None, f"{type(err).__name__}: {err}"
        return index, self.preprocess(image), hashlib.sha1(image.tobytes()).hexdigest(), None


def collate(items):
    """→ (decoded indices, batched pixels or None, pixel sha1s, [(index, reason)] of failures)."""
    ok = [item for item in items if item[1] is not None]
    failed = [(index, reason) for index, pixels, _, reason in items if pixels is None]
    pixels = default_collate([item[1] for item in ok]) if ok else None
    return [item[0] for item in ok], pixels, [item[2] for item in ok], failed


def shard_batches(shards: list[int], num_records: int, shard_size: int, batch_size: int) -> list[list[int]]:
    """Record indices in batches of `batch_size`, shard by shard; no batch crosses a shard boundary."""
    batches = []
    for shard in shards:
        start, stop = shard * shard_size, min(num_records, (shard + 1) * shard_size)
        batches += [list(range(b, min(b + batch_size, stop))) for b in range(start, stop, batch_size)]
    return batches


def encode_texts(texts: list[str], text_model, prefix: str, batch_size: int, device, precision) -> torch.Tensor:
    """(m,) captions → (m, D_txt) L2-normalised; each distinct text is encoded once, in batches."""
    unique = list(dict.fromkeys(texts))
    parts = []
    for start in range(0, len(unique), batch_size):
        with autocast(device, precision):
            batch = [prefix + t for t in unique[start : start + batch_size]]
            parts.append(F.normalize(text_model.encode(batch).float(), dim=-1).cpu())
    embeddings = torch.cat(parts) if parts else torch.zeros(0, text_model.dim)
    row = {text: i for i, text in enumerate(unique)}
    return embeddings[[row[t] for t in texts]]


def to_device(pixels, device: torch.device):
    if isinstance(pixels, dict):
        return {key: value.to(device, non_blocking=True) for key, value in pixels.items()}
    return pixels.to(device, non_blocking=True)


def encode_images(batches, image_model, device, precision, progress):
    """Run the image model over one shard's loader batches → (kept indices, (n, D) embeddings, sha1s, failures)."""
    kept, embeddings, hashes, failures = [], [], [], []
    for indices, pixels, sha1s, failed in batches:
        if pixels is not None:
            with autocast(device, precision):
                features = image_model.encode(to_device(pixels, device))
            embeddings.append(F.normalize(features.float(), dim=-1).cpu())
            kept += indices
            hashes += sha1s
        failures += failed
        progress.update(len(indices) + len(failed))
    images = torch.cat(embeddings) if embeddings else torch.zeros(0, image_model.dim)
    return kept, images, hashes, failures


def image_shards(records, shards, image_model, args, device, precision, progress):
    """Yield (shard index, kept record indices, (n, D) embeddings, sha1s, failures) for each of `shards`.

    One DataLoader (workers decode and preprocess; pinned memory on CUDA) feeds every shard; its
    batches never cross a shard boundary, so a shard's result does not depend on where a run started.
    """
    loader = DataLoader(
        ImageFiles(records, image_model.preprocess),
        batch_sampler=shard_batches(shards, len(records), args.shard_size, args.batch_size),
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate,
    )
    for index, group in itertools.groupby(loader, key=lambda b: (b[0] or [b[3][0][0]])[0] // args.shard_size):
        yield index, *encode_images(group, image_model, device, precision, progress)


def build_shard(records, kept, image_embeddings, hashes, failures, text_embed, optional) -> cache.ShardData:
    """Assemble a shard: the decoded images, all their captions, and the skipped images with reasons."""
    images = [records[i] for i in kept]
    captions = [(r.image_id, text) for r in images for text in r.captions]
    texts = [text for _, text in captions]
    return cache.ShardData(
        image_ids=[r.image_id for r in images],
        image_embeddings=image_embeddings.numpy(),
        image_paths=[r.path for r in images],
        caption_image_ids=[image_id for image_id, _ in captions],
        caption_embeddings=text_embed(texts).numpy(),
        caption_text=texts,
        image_labels=np.array([r.label for r in images], dtype=np.int64) if "labels" in optional else None,
        image_splits=[r.split for r in images] if "splits" in optional else None,
        image_pixel_sha1=hashes,
        skipped=[{"image_id": records[i].image_id, "path": records[i].path, "reason": r} for i, r in failures],
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign encode", description=__doc__)
    p.add_argument("--dataset", required=True, help=f"one of {DATASETS.names()}")
    p.add_argument("--root", required=True, type=Path, help="dataset root (images)")
    p.add_argument("--annotations", type=Path, help="annotation file (captions JSON / CSV / JSONL)")
    p.add_argument("--pairs", action="store_true", help="cifar100: side-by-side image pairs")
    p.add_argument("--image-model", required=True, help="e.g. open_clip:ViT-B-32@laion2b_s34b_b79k, timm:resnet18")
    p.add_argument("--text-model", required=True, help="e.g. st:intfloat/e5-large-v2, decoder:PATH")
    p.add_argument("--out", required=True, type=Path, help="cache directory")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=10000, help="images per shard")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (torchrun: auto → cuda:LOCAL_RANK)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored embedding dtype")
    p.add_argument("--limit", type=int, help="encode only the first N images (sorted by id)")
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--image-size", type=int, help="input size for backbones that accept any (timm, open_clip)")
    p.add_argument("--text-prefix", help="prepended to every caption (default: the model's own, E5: 'query: ')")
    p.add_argument("--text-instruction", help="decoder models: caption becomes 'Instruct: TEXT\\nQuery: caption'")
    return p


def request(args) -> dict:
    """The part of the cache header fixed by the command line (checked before any model loads)."""
    dataset = {
        "kind": args.dataset,
        "root": str(args.root.resolve()),
        "annotations": None if args.annotations is None else str(args.annotations.resolve()),
        "limit": args.limit,
    }
    if args.pairs:
        dataset["pairs"] = True
    return {"dataset": dataset, "shard_size": args.shard_size}


def check_request(args, asked: dict) -> None:
    """Refuse, before loading anything, a rerun on DIR with other models, dataset or shard size."""
    if not (args.out / cache.METADATA).exists():
        return
    meta = cache.read_metadata(args.out)
    built = {key: meta.get(key) for key in asked}
    built |= {"image_model": meta["image_model"]["spec"], "text_model": meta["text_model"]["spec"]}
    for key, value in {**asked, "image_model": args.image_model, "text_model": args.text_model}.items():
        if built[key] != value:
            raise BadInput(
                f"{args.out / cache.METADATA}: cache was built with {key} {built[key]!r}, not {value!r}; "
                "use another --out directory"
            )


def load_models(args, device, precision):
    image_options = {"image_size": args.image_size} if args.image_size else {}
    image_model = load_image_backbone(args.image_model, device, **image_options)
    text_model = load_text_backbone(args.text_model, device, precision=precision)
    if args.text_instruction is not None:
        prefix = E5_INSTRUCTION.format(args.text_instruction)
    else:
        prefix = args.text_prefix if args.text_prefix is not None else getattr(text_model, "default_prefix", "")
    if "random-init" in str(image_model.describe()["weights"]):
        print(f"note: {args.image_model} has no pretrained weights here; it is randomly initialised (seed 0)")
    return image_model, text_model, prefix


def prepare(args):
    """Check the request, read the dataset, load the models → (records, models, prefix, header, rank info)."""
    for name in ("batch_size", "shard_size"):
        if getattr(args, name) < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 1")
    asked = request(args)
    check_request(args, asked)
    rows_skipped: list[dict] = []
    options = {"pairs": True} if args.pairs else {}
    records = read_dataset(args.dataset, args.root, args.annotations, skipped=rows_skipped, **options)
    records = records[: args.limit] if args.limit else records
    if not records:
        raise BadInput(f"{args.root}: dataset '{args.dataset}' has no images")
    rank, world, local_rank = distributed()
    device = resolve_device(args.device, local_rank)
    precision = resolve_precision(args.precision, device)
    image_model, text_model, prefix = load_models(args, device, precision)
    header = {
        **asked,
        "image_model": {**image_model.describe(), "dtype": args.dtype, "normalized": True},
        "text_model": {**text_model.describe(), "prefix": prefix, "dtype": args.dtype, "normalized": True},
        "num_shards": -(-len(records) // args.shard_size),
        "versions": library_versions(),
    }
    cache.init_metadata(args.out, header, skipped=rows_skipped)
    return records, image_model, text_model, prefix, header["num_shards"], (rank, world, device, precision)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    records, image_model, text_model, prefix, num_shards, (rank, world, device, precision) = prepare(args)
    done = cache.finished_shards(args.out)
    todo = [i for i in range(num_shards) if i % world == rank and i not in done]
    optional = {
        name
        for name, field in (("labels", "label"), ("splits", "split"))
        if all(getattr(r, field) is not None for r in records)
    }
    text_embed = functools.partial(
        encode_texts,
        text_model=text_model,
        prefix=prefix,
        batch_size=args.batch_size,
        device=device,
        precision=precision,
    )
    desc = f"encode rank {rank}" if world > 1 else "encode"
    total = sum(len(records[i * args.shard_size : (i + 1) * args.shard_size]) for i in todo)
    with tqdm(total=total, unit="img", desc=desc, disable=None) as progress:
        shards = image_shards(records, todo, image_model, args, device, precision, progress)
        for index, kept, embeddings, hashes, failures in shards:
            offset = index * args.shard_size
            data = build_shard(
                records[offset : offset + args.shard_size],
                [k - offset for k in kept],
                embeddings,
                hashes,
                [(i - offset, reason) for i, reason in failures],
                text_embed,
                optional,
            )
            cache.record_shard(args.out, cache.write_shard(args.out, index, data, dtype=args.dtype))
    return report(args.out, num_shards, rank, world)


def report(out: Path, num_shards: int, rank: int, world: int) -> int:
    """Wait for every rank, then print the cache's state once."""
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank == 0:
        meta = cache.read_metadata(out)
        state = "complete" if meta["complete"] else f"{len(meta['shards'])}/{num_shards} shards"
        print(
            f"{out}: {meta['num_images']} images, {meta['num_captions']} captions, "
            f"{len(meta['skipped'])} skipped ({state})"
        )
    return 0
