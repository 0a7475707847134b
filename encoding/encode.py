"""The encode loop: run frozen backbones once over a dataset into a sharded, resumable cache.

`encode_cache(EncodeRequest(...))` is `xalign encode` as a library call. Shards hold `shard_size`
images each (with all their captions) and are written atomically; rerunning the same request
resumes at the first missing shard and gives the same shards as an uninterrupted run. Under
torchrun each rank encodes the shards `i` with `i % WORLD_SIZE == RANK`, giving the same cache as
one process. With `tokens` the shards also hold the backbones' tokens (`encoding.token_packing`, `token_shards`).
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from encoding import cache
from encoding.backbones import load_image_backbone, load_text_backbone
from encoding.datasets import ImageRecord, read_dataset
from encoding.errors import BadInput
from encoding.image_batches import EncodedShard, ShardPlan, image_shards
from encoding.runtime import (
    autocast,
    distributed,
    finish_distributed,
    library_versions,
    resolve_device,
    resolve_precision,
)
from encoding.token_packing import TokenLayout, check_image_tokens, pad_and_stack, real_tokens_first, token_layout

E5_INSTRUCTION = "Instruct: {}\nQuery: "
DATASET_KEYS = ("kind", "root", "annotations", "limit")  # the `dataset` entry's own keys; not reader options
SKIPPED_WARNING = 0.05  # warn when more than this share of the dataset's items was skipped
log = logging.getLogger(f"xalign.{__name__}")


def default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class EncodeRequest:
    """One `xalign encode` run: a field per command-line flag, with the command line's defaults.

    `dataset_options` are extra keyword options for the dataset reader (e.g. `{"num_images": 300}`
    for `demo`); like `pairs`, they are recorded in the cache's `dataset` entry, so a rerun on the
    same `out` with other values is refused.
    """

    dataset: str
    root: Path
    annotations: Path | None = None
    pairs: bool = False
    image_model: str
    text_model: str
    out: Path
    batch_size: int = 256
    shard_size: int = 10000  # images per shard
    device: str = "auto"
    precision: str = "auto"
    dtype: str = "float16"  # stored embedding dtype
    limit: int | None = None  # encode only the first N images (sorted by id)
    num_workers: int = field(default_factory=default_num_workers)
    image_size: int | None = None
    text_prefix: str | None = None
    text_instruction: str | None = None
    dataset_options: dict = field(default_factory=dict)
    tokens: bool = False  # also store image and caption tokens
    image_tokens: int | None = None  # average-pool each image's token grid to this many (a square)

    def __post_init__(self):
        for name in ("root", "out", "annotations"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, "dataset_options", dict(self.dataset_options))
        for name in ("batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be >= 1")
        reserved = sorted(set(self.dataset_options) & {*DATASET_KEYS, "pairs"})
        if reserved:
            raise BadInput(f"dataset_options {reserved}: these are EncodeRequest fields, not reader options")
        check_image_tokens(self.image_tokens, self.tokens)

    def reader_options(self) -> dict:
        """Keyword options for the dataset reader: `dataset_options`, plus `pairs=True` with `pairs`."""
        return {**self.dataset_options, **({"pairs": True} if self.pairs else {})}

    def plan(self, records: list[ImageRecord]) -> ShardPlan:
        """The shard plan of `records`: a shard never mixes two `shard_group`s (webdataset: tars)."""
        return ShardPlan.of(records, self.shard_size, self.batch_size, self.num_workers)

    def header(self) -> dict:
        """The part of the cache header fixed by the request (checked before any model loads)."""
        dataset = {
            "kind": self.dataset,
            "root": str(self.root.resolve()),
            "annotations": None if self.annotations is None else str(self.annotations.resolve()),
            "limit": self.limit,
            **self.reader_options(),
        }
        tokens = {"image_tokens": self.image_tokens} if self.tokens else None
        return {"dataset": dataset, "shard_size": self.shard_size, "tokens": tokens}


@dataclass(frozen=True)
class EncodeJob:
    """One rank's share of a request, once the request is checked, the dataset read and the models loaded."""

    records: list[ImageRecord]  # every record of the dataset (after `limit`), sorted by image id
    image_model: object
    text_model: object
    prefix: str  # prepended to every caption before the text model
    device: torch.device
    precision: str
    rank: int
    world: int
    plan: ShardPlan  # how the records are cut into shards (`EncodeRequest.plan`)
    optional: frozenset[str]  # "labels" / "splits" when every record has one
    tokens: TokenLayout | None  # with --tokens: what each image and caption stores

    @property
    def num_shards(self) -> int:
        return self.plan.num_shards(len(self.records))


def encode_texts(texts: list[str], text_model, prefix: str, batch_size: int, device, precision) -> torch.Tensor:
    """(m,) captions → (m, D_txt) L2-normalised; each distinct text is encoded once, in batches."""
    return encode_texts_with_tokens(texts, text_model, prefix, batch_size, device, precision, None)[0]


def encode_texts_with_tokens(texts, text_model, prefix: str, batch_size: int, device, precision, token_dim):
    """(m,) captions → ((m, D_txt) L2-normalised, tokens (m, L, D') float16, mask (m, L) bool); each distinct
    text is encoded once, in batches. Tokens are packed real first and padded to the longest caption (L);
    with `token_dim` None only the embeddings are computed (tokens and mask are None)."""
    unique = list(dict.fromkeys(texts))
    parts, token_parts = [], []
    batches = range(0, len(unique), batch_size)
    for start in tqdm(batches, desc=f"{len(unique)} captions", unit="batch", leave=False, disable=None):
        with autocast(device, precision):
            batch = [prefix + t for t in unique[start : start + batch_size]]
            if token_dim is None:
                parts.append(F.normalize(text_model.encode(batch).float(), dim=-1).cpu())
                continue
            features, hidden, mask = text_model.encode_with_tokens(batch)
            parts.append(F.normalize(features.float(), dim=-1).cpu())
        token_parts.append(real_tokens_first(hidden, mask))
    embeddings = torch.cat(parts) if parts else torch.zeros(0, text_model.dim)
    row = {text: i for i, text in enumerate(unique)}
    rows = [row[t] for t in texts]
    if token_dim is None:
        return embeddings[rows], None, None
    tokens, mask = pad_and_stack(token_parts, token_dim)
    return embeddings[rows], tokens[rows], mask[rows]


def check_request(request: EncodeRequest) -> None:
    """Refuse, before loading anything, a rerun on `out` with other models, dataset or shard size."""
    if (request.out / cache.METADATA).exists():
        asked = {**request.header(), "image_model.spec": request.image_model, "text_model.spec": request.text_model}
        cache.check_header(request.out, cache.read_metadata(request.out), asked)


def load_models(request: EncodeRequest, device: torch.device, precision: str) -> tuple[object, object, str]:
    """(image backbone, text backbone, caption prefix)."""
    image_options = {"image_size": request.image_size} if request.image_size else {}
    image_model = load_image_backbone(request.image_model, device, **image_options)
    text_model = load_text_backbone(request.text_model, device, precision=precision)
    if request.text_instruction is not None:
        prefix = E5_INSTRUCTION.format(request.text_instruction)
    elif request.text_prefix is not None:
        prefix = request.text_prefix
    else:
        prefix = getattr(text_model, "default_prefix", "")
    if "random-init" in str(image_model.describe()["weights"]):
        log.info(f"note: {request.image_model} has no pretrained weights here; it is randomly initialised (seed 0)")
    return image_model, text_model, prefix


def prepare(request: EncodeRequest) -> EncodeJob:
    """Check the request, read the dataset, load the models and create (or check) `metadata.json`."""
    check_request(request)
    rows_skipped: list[dict] = []
    records = read_dataset(
        request.dataset, request.root, request.annotations, skipped=rows_skipped, **request.reader_options()
    )
    records = records[: request.limit] if request.limit else records
    if not records:
        raise BadInput(f"{request.root}: dataset '{request.dataset}' has no images")
    refuse_missing_images(request.root, records)
    rank, world, local_rank = distributed()
    device = resolve_device(request.device, local_rank)
    precision = resolve_precision(request.precision, device)
    image_model, text_model, prefix = load_models(request, device, precision)
    plan = request.plan(records)
    num_shards = plan.num_shards(len(records))
    tokens = token_layout(image_model, text_model, request.image_tokens) if request.tokens else None
    header = {
        **request.header(),
        **model_entries(request, image_model, text_model, prefix, tokens),
        "num_shards": num_shards,
        "versions": library_versions(),
    }
    cache.init_metadata(request.out, header, skipped=rows_skipped)
    optional = frozenset(
        name
        for name, attribute in (("labels", "label"), ("splits", "split"))
        if all(getattr(r, attribute) is not None for r in records)
    )
    return EncodeJob(records, image_model, text_model, prefix, device, precision, rank, world, plan, optional, tokens)


def model_entries(request: EncodeRequest, image_model, text_model, prefix: str, tokens: TokenLayout | None) -> dict:
    """The `image_model` and `text_model` entries of metadata.json (with the token keys of a token cache)."""
    image_entry, text_entry = (tokens.image_entry(), tokens.text_entry()) if tokens else ({}, {})
    stored = {"dtype": request.dtype, "normalized": True}
    image_size = {"image_size": request.image_size} if request.image_size else {}  # rebuilds the same preprocessing
    return {
        "image_model": {**image_model.describe(), **image_entry, **stored, **image_size},
        "text_model": {**text_model.describe(), **text_entry, "prefix": prefix, **stored},
    }


def build_shard(job: EncodeJob, shard: EncodedShard, batch_size: int) -> cache.ShardData:
    """Assemble a shard: the decoded images, all their captions, and the skipped images with reasons."""
    images = [job.records[i] for i in shard.kept]
    captions = [(r.image_id, text) for r in images for text in r.captions]
    texts = [text for _, text in captions]
    token_dim = job.tokens.text_dim if job.tokens else None
    embeddings, tokens, mask = encode_texts_with_tokens(
        texts, job.text_model, job.prefix, batch_size, job.device, job.precision, token_dim
    )
    return cache.ShardData(
        image_ids=[r.image_id for r in images],
        image_embeddings=shard.embeddings.numpy(),
        image_paths=[r.path for r in images],
        caption_image_ids=[image_id for image_id, _ in captions],
        caption_embeddings=embeddings.numpy(),
        caption_text=texts,
        image_labels=np.array([r.label for r in images], dtype=np.int64) if "labels" in job.optional else None,
        image_splits=[r.split for r in images] if "splits" in job.optional else None,
        image_pixel_sha1=shard.sha1s,
        skipped=[
            {"image_id": job.records[i].image_id, "path": job.records[i].path, "reason": reason}
            for i, reason in shard.failures
        ],
        image_tokens=None if shard.tokens is None else shard.tokens.numpy(),
        caption_tokens=None if tokens is None else tokens.numpy(),
        caption_token_mask=None if mask is None else mask.numpy(),
    )


def encode_cache(request: EncodeRequest) -> dict:
    """Encode (or finish encoding) the cache `request.out` → its metadata once every rank is done.

    Resumes at the missing shards, shares them out among torchrun ranks, shows progress bars (images; each
    shard's captions), logs a line per shard written, and `OUT: N images, M captions, K skipped (complete)`
    once (rank 0).
    """
    job = prepare(request)
    done = cache.finished_shards(request.out)
    todo = [i for i in range(job.num_shards) if i % job.world == job.rank and i not in done]
    bounds = job.plan.bounds(len(job.records))
    total = sum(len(bounds[i]) for i in todo)
    desc = f"encode rank {job.rank}" if job.world > 1 else "encode"
    with tqdm(total=total, unit="img", desc=desc, disable=None) as progress:
        tokens = job.tokens.image if job.tokens else None
        shards = image_shards(job.records, todo, job.image_model, job.plan, job.device, job.precision, progress, tokens)
        for shard in shards:
            data = build_shard(job, shard, request.batch_size)
            cache.record_shard(request.out, cache.write_shard(request.out, shard.index, data, dtype=request.dtype))
            counts = f"{len(data.image_ids)} images, {len(data.caption_text)} captions"
            log.info(f"shard {shard.index + 1}/{job.num_shards} written ({counts})")
    return report(request.out, job)


def summary(out: Path, meta: dict) -> str:
    """`OUT: N images, M captions, K skipped (complete)` (or `(i/n shards)` for an unfinished cache)."""
    state = "complete" if meta["complete"] else f"{len(meta['shards'])}/{meta['num_shards']} shards"
    return (
        f"{out}: {meta['num_images']} images, {meta['num_captions']} captions, {len(meta['skipped'])} skipped ({state})"
    )


def refuse_missing_images(root: Path, records: list[ImageRecord]) -> None:
    """`BadInput` before anything is written when not one image file the annotations name exists (a wrong --root)."""
    files = [record.path for record in records if "://" not in record.path]
    if files and not any(os.path.isfile(path) for path in files):
        raise BadInput(
            f"{root}: none of the {len(files)} image files the annotations name exists (e.g. {files[0]}); check --root"
        )


def report(out: Path, job: EncodeJob) -> dict:
    """Wait for every rank → the cache's metadata (`summary` says what it holds).

    A complete cache without a single image is `BadInput`; more than `SKIPPED_WARNING` of the items
    skipped is a warning.
    """
    if job.world > 1:
        finish_distributed()
    meta = cache.read_metadata(out)
    skipped, images = len(meta["skipped"]), meta["num_images"]
    if job.rank == 0:
        if skipped > SKIPPED_WARNING * (images + skipped):
            log.warning(
                f"{skipped} of {images + skipped} items were skipped; `xalign inspect {out}` lists each with its reason"
            )
    if meta["complete"] and images == 0:
        reason = meta["skipped"][0]["reason"] if meta["skipped"] else "none listed"
        raise BadInput(f"{out}: not one image could be read (first reason: {reason}); check --root and the files")
    return meta
