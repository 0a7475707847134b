"""Contrastive losses on L2-normalised features, chosen by name (`loss.type`).

Each loss lives in its own file: a frozen options dataclass (its keys under `loss:` and their
defaults, the one place they are defined) and an `nn.Module` registered by name, constructed as
`Loss(options, learnable_temperature=True)` and called as `loss(image_features (B, D),
text_features (B, D), image_ids (B,) or None)` → scalar. Rows with equal `image_ids` are positives
of each other, never negatives (ALBEF's image-id targets); `image_ids=None` means every row is a
different image. `build(name, **options)` validates the options: a key the loss does not take is
`BadInput` naming the key, the loss and the keys it takes.

Keys every loss section has (`LossOptions`): `hard_negative_beta` (see `hard_negatives.py`) and
`mixup_alpha` (FuseMix latent mixup on the head inputs, applied by the trainer; see `mixing.py`).
Every loss has `scale()`, the current logit scale (1 / temperature), and `clamp_()`, which the
trainer calls after each optimiser step to keep a learnable scale in range in place (open_clip's
rule: a scale clamped only in the forward pass gets zero gradient above the bound and freezes).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from encoding.registry import Registry
from pipeline.config import schema

LOSSES = Registry("loss")
MAX_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class LossOptions:
    """Keys every loss section has."""

    type: str = "clip"  # build options through `options_for`, which sets the type
    hard_negative_beta: float = 0.0  # 0 = off
    mixup_alpha: float = 0.0  # FuseMix Beta(α, α) on the head inputs; 0 = off


class ScaledLoss(nn.Module):
    """A loss with logit scale s = exp(logit_scale), s = 1 / temperature at the start, kept in [1, 100]."""

    def __init__(self, temperature: float, learnable_temperature: bool):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable_temperature)
        self.clamp_()

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def same_image(image_ids: torch.Tensor | None, batch: int, device, other_ids: torch.Tensor | None = None):
    """(B, K) bool: row i and column k show the same image (K = B, or len(other_ids) against a queue)."""
    if image_ids is None:
        return torch.eye(batch, dtype=torch.bool, device=device)
    other = image_ids if other_ids is None else other_ids
    return image_ids[:, None] == other[None, :]


def positive_targets(image_ids: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """(B, B) soft targets: row i spreads mass 1 uniformly over the rows sharing image i's id."""
    same = same_image(image_ids, batch, device).float()
    return same / same.sum(dim=1, keepdim=True)


resolve_loss = schema.registered_options(LOSSES)


def options_for(name: str, options: dict, section: str = "loss") -> LossOptions:
    """The loss's options dataclass built from `options` (type- and range-checked; foreign keys refused)."""
    return schema.build(LossOptions, {**options, "type": name}, f"{section}.", resolve_loss)


def build(name: str, learnable_temperature: bool = True, **options) -> nn.Module:
    """The loss `name` (options as in the `loss:` section)."""
    return LOSSES.get(name, key="loss.type")(options_for(name, options), learnable_temperature)


def build_from(options: LossOptions, learnable_temperature: bool = True) -> nn.Module:
    """The loss a validated options dataclass describes."""
    return LOSSES.get(options.type, key="loss.type")(options, learnable_temperature)


# Register the losses.
from pipeline.losses import align, blip, clip, infonce_queue, itm, siglip  # noqa: E402,F401
