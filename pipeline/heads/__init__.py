"""Projection-head pairs: an image head and a text head mapping cache dims to a shared space.

`build(name, image_dim, text_dim, **options)` → a `HeadPair`; options a head does not use are
ignored, so one config section serves every head.
"""

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from encoding.registry import Registry

HEADS = Registry("head")


class HeadPair(nn.Module):
    """Two heads; `encode_image` (N, D_img) and `encode_text` (M, D_txt) give L2-normalised (·, output_dim)."""

    def __init__(self, image_head: nn.Module, text_head: nn.Module):
        super().__init__()
        self.image_head, self.text_head = image_head, text_head

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_head(x), dim=-1)

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(x), dim=-1)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(image), self.encode_text(text)

    def momentum_features(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Features of momentum (EMA) copies of the heads for a training batch; None when the pair has none."""
        return None


def accepted_options(constructor, options: dict) -> dict:
    """The subset of `options` that `constructor` takes as keyword arguments."""
    parameters = inspect.signature(constructor).parameters
    return {k: v for k, v in options.items() if k in parameters}


def build(name: str, image_dim: int, text_dim: int, **options) -> HeadPair:
    constructor = HEADS.get(name, key="model.type")
    return constructor(image_dim, text_dim, **accepted_options(constructor, options))


# Register the heads.
from pipeline.heads import align, attention, blip, clip, cross_modal, linear, mlp, siglip  # noqa: E402,F401
