"""`xalign bench encode`: images/s of the full encoding pipeline vs the bare forward pass.

Pipeline: JPEG files → DataLoader workers (decode, the backbone's preprocessing) → forward →
L2-normalise → HDF5 shard write, exactly as `xalign encode` runs it (image side). Forward: the same
model on the same images already decoded and preprocessed into batches in memory. Both loops run
in this process, one after the other, after a warm-up, `--repeats` times alternating; the best
time of each is kept (least disturbed by other load) and `pipeline_vs_forward` is their ratio.

`--dataset webdataset`: the same JPEGs are also packed into img2dataset-style tars (`--shard-size` images
each) and encoded from the tars in place, `xalign encode --dataset webdataset`'s path, the tar scan included;
`webdataset_vs_folder` is its images/s over the folder pipeline's.

`--tokens`: the forward and the pipeline also keep and store the image tokens (`xalign encode --tokens`,
image side), and the pooled-only pipeline is measured too: `tokens_cost` = pooled-only pipeline images/s
over the tokens pipeline's (1.0: storing tokens costs nothing).
"""

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from encoding import cache
from encoding.backbones import load_image_backbone
from encoding.datasets import ImageRecord, read_dataset
from encoding.image_batches import ImageFiles, ShardPlan, collate, image_shards, to_device
from encoding.runtime import autocast, resolve_device, resolve_precision, synchronize
from encoding.token_packing import ImageTokens, check_image_tokens, image_tokens_for


def write_jpegs(folder: Path, count: int, width: int, height: int) -> list[ImageRecord]:
    """`count` photo-like JPEGs (smooth colour fields with noise), quality 90."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    records = []
    for i in range(count):
        a, b, c = rng.uniform(0.005, 0.05, size=3)
        base = np.stack([np.sin(a * x + i), np.cos(b * y), np.sin(c * (x + y))], axis=-1) * 100 + 128
        pixels = (base + rng.normal(0, 12, size=base.shape)).clip(0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        records.append(ImageRecord(image_id=f"{i:06d}", path=str(path)))
    return records


def run_pipeline(records, model, plan: ShardPlan, device, precision, out: Path, tokens: ImageTokens | None) -> float:
    """Seconds for decode → preprocess → forward → write of every record (and its tokens), in `--shard-size` shards."""
    start = time.perf_counter()
    shards = list(range(plan.num_shards(len(records))))
    no_captions = {"caption_tokens": np.zeros((0, 0, 1), np.float16), "caption_token_mask": np.zeros((0, 0), bool)}
    for shard in image_shards(records, shards, model, plan, device, precision, tokens=tokens):
        data = cache.ShardData(
            image_ids=[records[i].image_id for i in shard.kept],
            image_embeddings=shard.embeddings.numpy(),
            image_paths=[records[i].path for i in shard.kept],
            caption_image_ids=[],
            caption_embeddings=np.zeros((0, 1), np.float32),
            caption_text=[],
            image_pixel_sha1=shard.sha1s,
            **({} if tokens is None else {"image_tokens": shard.tokens.numpy(), **no_captions}),
        )
        cache.write_shard(out, shard.index, data)
    synchronize(device)
    return time.perf_counter() - start


def write_tars(records: list[ImageRecord], folder: Path, per_tar: int) -> Path:
    """The JPEGs of `records` packed into tars of `per_tar` samples (`KEY.jpg`, `KEY.txt`) → their --root pattern."""
    for number, first in enumerate(range(0, len(records), per_tar)):
        with tarfile.open(folder / f"{number:05d}.tar", "w") as tar:
            for record in records[first : first + per_tar]:
                tar.add(record.path, arcname=f"{record.image_id}.jpg")
                caption = tarfile.TarInfo(f"{record.image_id}.txt")
                caption.size = len(text := f"image {record.image_id}".encode())
                tar.addfile(caption, io.BytesIO(text))
    return folder / "*.tar"


def run_webdataset(root: Path, model, args, device, precision, out: Path, tokens: ImageTokens | None) -> float:
    """Seconds for the tar scan (`read_dataset`) and the pipeline over the records it gives, one shard per tar."""
    start = time.perf_counter()
    records = read_dataset("webdataset", root)
    plan = ShardPlan.of(records, args.shard_size, args.batch_size, args.num_workers)
    return time.perf_counter() - start + run_pipeline(records, model, plan, device, precision, out, tokens)


def run_forward(batches, model, device, precision, tokens: ImageTokens | None) -> float:
    """Seconds for the forward (+ normalise, copy back; tokens pooled and copied back) over preprocessed batches."""
    start = time.perf_counter()
    for pixels in batches:
        with autocast(device, precision):
            if tokens is None:
                features = model.encode(to_device(pixels, device))
            else:
                features, grid_tokens, grid = model.encode_with_tokens(to_device(pixels, device))
        if tokens is not None:
            tokens.store(grid_tokens, grid)
        F.normalize(features.float(), dim=-1).cpu()
    synchronize(device)
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench encode", description=__doc__)
    p.add_argument("--image-model", default="timm:resnet18", help="any `xalign encode` image model spec")
    p.add_argument("--image-size", type=int, default=64, help="model input size (timm, open_clip); 0 = model's own")
    p.add_argument("--images", type=int, default=256, help="generated JPEGs to encode")
    p.add_argument("--dataset", choices=["folder", "webdataset"], default="folder", help="webdataset: tars vs folder")
    p.add_argument("--repeats", type=int, default=2, help="alternating measurements of each loop; best kept")
    p.add_argument("--width", type=int, default=320, help="generated JPEG width (height = 3/4 of it)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument(
        "--tokens", action="store_true", help="also store image tokens; measure the pooled-only pipeline too"
    )
    p.add_argument("--image-tokens", type=int, help="with --tokens: pool each image's token grid to N = s*s")
    return p


def measure(args, model, records, batches, device, precision, tmp: Path, tokens: ImageTokens | None) -> dict:
    """Best seconds of each loop over `--repeats` alternating runs, after a warm-up: forward, pipeline, with
    `tokens` also the pooled-only pipeline, with `--dataset webdataset` also the pipeline reading tars."""
    out = tmp / "cache"
    plan = ShardPlan(args.shard_size, args.batch_size, args.num_workers)
    loops = {
        "forward": lambda: run_forward(batches, model, device, precision, tokens),
        "pipeline": lambda: run_pipeline(records, model, plan, device, precision, out, tokens),
    }
    if tokens is not None:
        loops["pooled_pipeline"] = lambda: run_pipeline(records, model, plan, device, precision, out, None)
    if args.dataset == "webdataset":
        root = write_tars(records, tmp / "images", args.shard_size)
        loops["webdataset"] = lambda: run_webdataset(root, model, args, device, precision, out, tokens)
    run_forward(batches[:2], model, device, precision, tokens)  # warm-up
    run_pipeline(records[: 2 * args.batch_size], model, plan, device, precision, out, tokens)  # warm-up
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(max(1, args.repeats)):
        for name, loop in loops.items():
            best[name] = min(best[name], loop())
    return best


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_image_tokens(args.image_tokens, args.tokens)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    options = {"image_size": args.image_size} if args.image_size else {}
    model = load_image_backbone(args.image_model, device, **options)
    tokens = image_tokens_for(model, args.image_tokens) if args.tokens else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        (tmp / "cache").mkdir()
        records = write_jpegs(tmp / "images", args.images, args.width, args.width * 3 // 4)
        decoded = ImageFiles(records, model.preprocess)
        one_shard = ShardPlan(shard_size=len(records), batch_size=args.batch_size)
        batches = [collate([decoded[i] for i in batch]).pixels for batch in one_shard.batches([0], len(records))]
        seconds = measure(args, model, records, batches, device, precision, tmp, tokens)
    result = {
        "pipeline_images_per_s": round(len(records) / seconds["pipeline"], 1),
        "forward_images_per_s": round(len(records) / seconds["forward"], 1),
        "pipeline_vs_forward": round(seconds["forward"] / seconds["pipeline"], 3),
    }
    if args.dataset == "webdataset":
        result["webdataset_images_per_s"] = round(len(records) / seconds["webdataset"], 1)
        result["webdataset_vs_folder"] = round(seconds["pipeline"] / seconds["webdataset"], 3)
    if tokens is not None:
        result["pooled_pipeline_images_per_s"] = round(len(records) / seconds["pooled_pipeline"], 1)
        result["tokens_cost"] = round(seconds["pipeline"] / seconds["pooled_pipeline"], 3)
        result["image_tokens"] = [tokens.num_tokens, tokens.token_dim]
    result |= {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        "image_model": args.image_model,
        "image_size": args.image_size or None,
        "dataset": args.dataset,
        "images": len(records),
        "jpeg_size": [args.width, args.width * 3 // 4],
        "batch_size": args.batch_size,
        "repeats": max(1, args.repeats),
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0
