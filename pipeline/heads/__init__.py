"""Projection-head pairs: an image head and a text head mapping cache dims to a shared space.

Each head lives in its own file: a frozen options dataclass (its keys under `model:` and their
defaults, the one place they are defined) and a builder registered by name,
`builder(image_dim, text_dim, options) -> HeadPair`. `build(name, image_dim, text_dim, **options)`
validates the options against the head's dataclass: a key the head does not take is `BadInput`
naming the key, the head and the keys it takes. Token heads (`takes_tokens(options)`: attention_pool,
token_transformer, sparse_attention, cross_encoder) read token batches instead of pooled vectors and
take the token dims; see `tokens.py`.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from encoding.registry import Registry
from pipeline.config import schema

HEADS = Registry("head")


@dataclass(frozen=True)
class HeadOptions:
    """Keys every head section has: the head's name, and whether the loss learns its temperature."""

    type: str = "mlp"  # build options through `options_for`, which sets the type
    learnable_temp: bool = True
    required_loss: ClassVar[str | None] = None  # the loss a head must train with (its default), if any
    scores_pairs: ClassVar[bool] = False  # scores (image, caption) pairs (a cross encoder) instead of embedding each


@dataclass(frozen=True)
class ProjectionOptions(HeadOptions):
    """Keys of heads with a hidden layer before the projection to `output_dim`."""

    output_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.1


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

    @torch.no_grad()
    def embed(self, image: torch.Tensor, text: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) image and (M, D) caption embeddings of raw (N, D_img) and (M, D_txt) inputs, in fp32 and eval
        mode, `batch_size` rows at a time (inputs may live on another device than the heads)."""
        self.eval()
        device = next(self.parameters()).device

        def run(encode, x: torch.Tensor) -> torch.Tensor:
            parts = [encode(x[i : i + batch_size].to(device).float()) for i in range(0, len(x), batch_size)]
            return torch.cat(parts) if parts else x.new_zeros(0, 0, device=device)

        return run(self.encode_image, image), run(self.encode_text, text)


resolve_head = schema.registered_options(HEADS)


def options_for(name: str, options: dict, section: str = "model") -> HeadOptions:
    """The head's options dataclass built from `options` (type- and range-checked; foreign keys refused)."""
    return schema.build(HeadOptions, {**options, "type": name}, f"{section}.", resolve_head)


def build(name: str, image_dim: int, text_dim: int, **options) -> HeadPair:
    """The head pair `name` for inputs of `image_dim` and `text_dim` (options as in the `model:` section)."""
    return HEADS.get(name, key="model.type")(image_dim, text_dim, options_for(name, options))


def build_from(options: HeadOptions, image_dim: int, text_dim: int) -> HeadPair:
    """The head pair a validated options dataclass describes."""
    return HEADS.get(options.type, key="model.type")(image_dim, text_dim, options)


# Register the heads.
from pipeline.heads import (  # noqa: E402,F401
    align,
    attention,
    attention_pool,
    blip,
    clip,
    cross_encoder,
    cross_modal,
    linear,
    mlp,
    siglip,
    sparse_attention,
    token_transformer,
)
from pipeline.heads.token_pair import TokenHeadOptions, TokenHeadPair, takes_tokens  # noqa: E402,F401
