"""Images of a cache split, decoded by DataLoader workers, with the split's frozen caption embeddings or, in
two-tower mode, its caption texts tokenised in the same workers (`PairImages`, `TokenizingCollate`).

Augmentation draws from a random stream seeded by (seed, epoch, image row), so an epoch's pixels are
the same whatever the number of workers, and a resumed run sees exactly what an uninterrupted one would.
"""

import torch
from torch.utils.data import DataLoader, Dataset

from encoding.backbones.image_encoder import eval_transform, image_size_hw
from encoding.datasets import open_image
from pipeline.config.backbone import AugmentConfig, BackboneModelConfig


def train_transform(model: BackboneModelConfig, augment: AugmentConfig):
    """PIL image → (3, H, W): random resized crop, flip, rotation, colour jitter, then the eval normalisation."""
    from torchvision import transforms

    height, width = image_size_hw(model.image_size)
    steps = []
    if augment.crop_scale < 1:
        ratio = width / height
        steps.append(
            transforms.RandomResizedCrop((height, width), (augment.crop_scale, 1.0), (ratio * 0.9, ratio / 0.9))
        )
    else:
        steps.append(transforms.Resize((height, width), antialias=True))
    if augment.flip > 0:
        steps.append(transforms.RandomHorizontalFlip(augment.flip))
    if augment.rotation > 0:
        steps.append(transforms.RandomRotation(augment.rotation))
    if augment.color_jitter > 0:
        steps.append(transforms.ColorJitter(augment.color_jitter, augment.color_jitter, augment.color_jitter))
    return transforms.Compose([*steps, *eval_transform(model.image_size, model.mean, model.std).transforms[1:]])


class SplitImages(Dataset):
    """Item `row` → (row, (3, H, W) pixels) of the split's image `row` (cache order)."""

    def __init__(self, paths, transform, seed: int | None = None):
        self.paths, self.transform, self.seed, self.epoch = list(paths), transform, seed, 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        image = open_image(self.paths[row])
        if self.seed is None:
            return row, self.transform(image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + row)
            return row, self.transform(image)


def image_loader(dataset: SplitImages, order, batch_size: int, num_workers: int, drop_last: bool, pin: bool):
    """Batches of (rows (B,), pixels (B, 3, H, W)) in the given row order."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=[int(r) for r in order],
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin,
    )


class PairImages(Dataset):
    """Item (image row, caption row) → (row, (3, H, W) pixels, caption text): two-tower training pairs."""

    def __init__(self, images: SplitImages, captions):
        self.images, self.captions = images, list(captions)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, pair):
        row, pixels = self.images[pair[0]]
        return row, pixels, self.captions[pair[1]]


class Captions(Dataset):
    """Item i → caption text i (validation and query embedding)."""

    def __init__(self, captions):
        self.captions = list(captions)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> str:
        return self.captions[index]


class TokenizingCollate:
    """Batches tokenised inside the loader workers: (row, pixels, text) items → (rows (B,), pixels (B, 3, H, W),
    ids (B, L), mask (B, L)); text-only items → (ids, mask)."""

    def __init__(self, tokenize):
        self.tokenize = tokenize

    def __call__(self, items):
        if isinstance(items[0], str):
            return self.tokenize(items)
        rows, pixels, texts = zip(*items)
        return (torch.tensor(rows), torch.stack(pixels), *self.tokenize(list(texts)))


def pair_loader(dataset, order, batch_size: int, num_workers: int, drop_last: bool, pin: bool, tokenize):
    """Batches of `dataset` items in `order` (pairs or caption indices), tokenised in the workers."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=list(order),
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin,
        collate_fn=TokenizingCollate(tokenize),
    )
