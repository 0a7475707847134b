"""Contrastive losses on L2-normalised features, chosen by name (`loss.type`).

`build(name, **options)` → an `nn.Module` called as `loss(image_features (B, D), text_features (B, D),
image_ids (B,) or None)` → scalar. Rows with equal `image_ids` are positives of each other, never
negatives (ALBEF's image-id targets); `image_ids=None` means every row is a different image.
Options a loss does not take are ignored, and options set to None mean "the loss's own default",
so one config section serves every loss.

Every loss takes `hard_negative_beta` (see `hard_negatives.py`); latent mixup (`loss.mixup_alpha`,
FuseMix) acts on the head inputs and is applied by the engine (see `mixing.py`). Every loss has a
`scale()` method: the current logit scale (1 / temperature).
"""

import torch

from encoding.registry import Registry
from pipeline.heads import accepted_options

LOSSES = Registry("loss")


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


def build(name: str, **options) -> torch.nn.Module:
    constructor = LOSSES.get(name, key="loss.type")
    options = {k: v for k, v in options.items() if v is not None}
    return constructor(**accepted_options(constructor, options))


# Register the losses.
from pipeline.losses import align, blip, clip, infonce_queue, siglip  # noqa: E402,F401
