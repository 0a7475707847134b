"""Frozen backbones, chosen by spec `PREFIX:NAME_OR_PATH` (e.g. `st:intfloat/e5-large-v2`).

An image backbone has `dim`, `preprocess(PIL.Image) -> (C, H, W) tensor`, `encode(pixels (B, C, H, W))
-> (B, dim)` and `describe() -> dict`; a text backbone has `dim`, `encode(list[str]) -> (B, dim)` and
`describe()`. `describe()` is what metadata.json records: spec, dim, weights identity, preprocessing.
A spec with no known prefix is a path to an image-encoder checkpoint written by this project.
"""

from pathlib import Path

import torch

from encoding.errors import BadInput
from encoding.registry import Registry

IMAGE_BACKBONES = Registry("image backbone prefix")
TEXT_BACKBONES = Registry("text backbone prefix")
CHECKPOINT_PREFIX = "checkpoint"


def split_spec(spec: str) -> tuple[str, str]:
    """`'open_clip:ViT-B-32@laion2b'` → `('open_clip', 'ViT-B-32@laion2b')`; a bare path → checkpoint."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in IMAGE_BACKBONES.names() + TEXT_BACKBONES.names():
        return prefix, rest
    if Path(spec).exists():
        return CHECKPOINT_PREFIX, spec
    known = sorted(set(IMAGE_BACKBONES.names() + TEXT_BACKBONES.names()))
    raise BadInput(
        f"model spec '{spec}': expected PREFIX:NAME with PREFIX one of {known}, or an existing checkpoint path"
    )


def load_image_backbone(spec: str, device: torch.device, **options):
    prefix, name = split_spec(spec)
    return IMAGE_BACKBONES.get(prefix, key="--image-model")(name, device=device, spec=spec, **options)


def load_text_backbone(spec: str, device: torch.device, **options):
    prefix, name = split_spec(spec)
    return TEXT_BACKBONES.get(prefix, key="--text-model")(name, device=device, spec=spec, **options)


# Register the backbones.
from encoding.backbones import decoder, hf, open_clip_models, sentence_transformers, timm_models, trained  # noqa: E402,F401
