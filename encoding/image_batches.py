"""The image side of the encode loop: decode files in DataLoader workers, batch them shard by shard,
and run the image backbone → one `EncodedShard` (L2-normalised embeddings, optionally tokens) per shard.

Batches never cross a shard boundary (`ShardPlan`), so a shard's embeddings do not depend on
where a run started: a resumed run writes the same shards as an uninterrupted one.
"""

import bisect
import dataclasses
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from encoding.datasets import ImageRecord, open_image
from encoding.runtime import autocast
from encoding.token_packing import ImageTokens

# What a backbone's `preprocess` returns per image, batched: (B, C, H, W) or a dict of such tensors.
Pixels = torch.Tensor | dict[str, torch.Tensor]


@dataclass(frozen=True)
class ShardPlan:
    """How records are cut: at most `shard_size` consecutive images per shard, loader batches of at most
    `batch_size`. `groups` are the sizes of consecutive runs of records that no shard may mix (a dataset's own
    files, e.g. webdataset tars, so that each is resumed and shared out whole); () is one run of every record."""

    shard_size: int
    batch_size: int
    num_workers: int = 0
    groups: tuple[int, ...] = ()

    @classmethod
    def of(cls, records: list[ImageRecord], shard_size: int, batch_size: int, num_workers: int = 0) -> "ShardPlan":
        """The plan of `records` (in order): its groups are the runs of records sharing a `shard_group`."""
        groups = tuple(len(list(run)) for _, run in itertools.groupby(records, key=lambda r: r.shard_group))
        return cls(shard_size, batch_size, num_workers, groups)

    def bounds(self, num_records: int) -> list[range]:
        """Record indices of every shard, in order."""
        sizes = self.groups or (num_records,)
        if sum(sizes) != num_records:
            raise ValueError(f"groups {sizes} do not add up to {num_records} records")
        starts = itertools.accumulate(sizes, initial=0)
        return [
            range(first, min(first + self.shard_size, start + size))
            for start, size in zip(starts, sizes)
            for first in range(start, start + size, self.shard_size)
        ]

    def num_shards(self, num_records: int) -> int:
        return len(self.bounds(num_records))

    def shard_records(self, shard: int, num_records: int) -> range:
        """Record indices of shard `shard`."""
        return self.bounds(num_records)[shard]

    def batches(self, shards: list[int], num_records: int) -> list[list[int]]:
        """Record indices in batches, shard by shard; no batch crosses a shard boundary."""
        bounds = self.bounds(num_records)
        return [
            list(bounds[shard][b : b + self.batch_size])
            for shard in shards
            for b in range(0, len(bounds[shard]), self.batch_size)
        ]

    def shard_of(self, num_records: int) -> Callable[[int], int]:
        """record index → index of the shard holding it."""
        starts = [shard.start for shard in self.bounds(num_records)]
        return lambda record: bisect.bisect_right(starts, record) - 1


@dataclass
class DecodedImage:
    """One record's image after decoding and the backbone's preprocessing, or why it failed."""

    index: int  # record index
    pixels: Pixels | None  # (C, H, W), or a dict of per-image tensors; None when decoding failed
    sha1: str | None  # of the decoded RGB pixels, for duplicate grouping
    failure: str | None = None  # "ErrorType: message" when decoding failed


def _apply(pixels: Pixels | None, method: str, *args, **kwargs) -> Pixels | None:
    """`tensor.<method>(...)` on a tensor or on each tensor of a dict."""
    if isinstance(pixels, dict):
        return {key: getattr(value, method)(*args, **kwargs) for key, value in pixels.items()}
    return None if pixels is None else getattr(pixels, method)(*args, **kwargs)


@dataclass
class ImageBatch:
    """One loader batch: the record indices asked for, those decoded with their pixels and hashes, the failures."""

    indices: list[int]  # (b,) every record index of the batch
    kept: list[int]  # (k,) the decoded ones
    pixels: Pixels | None  # (k, C, H, W) or a dict of batched tensors; None when k == 0
    sha1s: list[str]  # (k,)
    failures: list[tuple[int, str]]  # (record index, reason)

    def pin_memory(self) -> "ImageBatch":
        """Called by `DataLoader(pin_memory=True)`: pixels in page-locked memory, for async copies."""
        return dataclasses.replace(self, pixels=_apply(self.pixels, "pin_memory"))


@dataclass
class EncodedShard:
    """One shard's image embeddings. n decoded images."""

    index: int  # shard index
    kept: list[int]  # (n,) record indices of the decoded images, in order
    embeddings: torch.Tensor  # (n, D_img) float32 on CPU, L2-normalised
    sha1s: list[str]  # (n,) decoded-pixel hashes
    failures: list[tuple[int, str]]  # (record index, reason) of the images that did not decode
    tokens: torch.Tensor | None = None  # (n, T, D) float16 on CPU, with `--tokens`


class ImageFiles(Dataset):
    """Decodes and preprocesses one record's image; a decode failure is returned with its reason."""

    def __init__(self, records: list[ImageRecord], preprocess):
        self.records, self.preprocess = records, preprocess

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> DecodedImage:
        try:
            image = open_image(self.records[index].path)
        except Exception as err:  # unreadable, truncated or not an image: skipped, with the reason
            return DecodedImage(index, None, None, f"{type(err).__name__}: {err}")
        return DecodedImage(index, self.preprocess(image), hashlib.sha1(image.tobytes()).hexdigest())


def collate(items: list[DecodedImage]) -> ImageBatch:
    """Stack the decoded images' pixels; failures are listed with their reasons."""
    ok = [item for item in items if item.failure is None]
    return ImageBatch(
        indices=[item.index for item in items],
        kept=[item.index for item in ok],
        pixels=default_collate([item.pixels for item in ok]) if ok else None,
        sha1s=[item.sha1 for item in ok],
        failures=[(item.index, item.failure) for item in items if item.failure is not None],
    )


def to_device(pixels: Pixels, device: torch.device) -> Pixels:
    return _apply(pixels, "to", device, non_blocking=True)


def encode_shard(
    index: int, batches, image_model, device, precision, progress: tqdm | None, tokens: ImageTokens | None = None
) -> EncodedShard:
    """Run the image model over one shard's `ImageBatch`es → its `EncodedShard`.

    With `tokens`, one `encode_with_tokens` forward per batch gives both the embeddings and the stored tokens.
    """
    kept, embeddings, token_parts, sha1s, failures = [], [], [], [], []
    for batch in batches:
        if batch.pixels is not None:
            pixels = to_device(batch.pixels, device)
            with autocast(device, precision):
                if tokens is None:
                    features = image_model.encode(pixels)
                else:
                    features, grid_tokens, grid = image_model.encode_with_tokens(pixels)
            if tokens is not None:
                token_parts.append(tokens.store(grid_tokens, grid))
            embeddings.append(F.normalize(features.float(), dim=-1).cpu())
            kept += batch.kept
            sha1s += batch.sha1s
        failures += batch.failures
        if progress is not None:
            progress.update(len(batch.indices))
    images = torch.cat(embeddings) if embeddings else torch.zeros(0, image_model.dim)
    stored = None if tokens is None else torch.cat(token_parts) if token_parts else tokens.empty()
    return EncodedShard(index, kept, images, sha1s, failures, stored)


def image_shards(
    records, shards: list[int], image_model, plan: ShardPlan, device, precision, progress=None, tokens=None
):
    """Yield the `EncodedShard` of each of `shards`, in order (with image tokens when `tokens` is an `ImageTokens`).

    One DataLoader (workers decode and preprocess; pinned memory on CUDA) feeds every shard.
    """
    loader = DataLoader(
        ImageFiles(records, image_model.preprocess),
        batch_sampler=plan.batches(shards, len(records)),
        num_workers=plan.num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate,
    )
    shard_of = plan.shard_of(len(records))
    for index, batches in itertools.groupby(loader, key=lambda batch: shard_of(batch.indices[0])):
        yield encode_shard(index, batches, image_model, device, precision, progress, tokens)
