"""Contrastive losses on L2-normalised features.

`build(name, **options)` → an `nn.Module` called as `loss(image_features (B, D), text_features (B, D),
image_ids (B,) or None)` → scalar. Rows with equal `image_ids` are positives of each other, never
negatives (ALBEF's image-id targets); `image_ids=None` means every row is a different image.
Options a loss does not take are ignored, so one config section serves every loss.
"""

import torch

from encoding.registry import Registry
from pipeline.heads import accepted_options

LOSSES = Registry("loss")


def positive_targets(image_ids: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """(B, B) soft targets: row i spreads mass 1 uniformly over the rows sharing image i's id."""
    if image_ids is None:
        return torch.eye(batch, device=device)
    same = (image_ids[:, None] == image_ids[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def build(name: str, **options) -> torch.nn.Module:
    constructor = LOSSES.get(name, key="loss.type")
    return constructor(**accepted_options(constructor, options))


# Register the losses.
from pipeline.losses import clip  # noqa: E402,F401
