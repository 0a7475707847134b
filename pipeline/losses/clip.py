"""CLIP loss: symmetric InfoNCE with a learnable (or fixed) temperature (Radford et al., 2021).

logits = s · I Tᵀ with s = exp(logit_scale) kept in [1, 100] (clamped in place after each step);
loss = ½ (CE(logits, Y) + CE(logitsᵀ, Yᵀ)) with Y the image-id soft targets. Without repeated
image ids this equals open_clip's `ClipLoss`. Batches above `blocked.LARGE_BATCH` take each direction's
cross-entropy a block of rows at a time (`infonce_rows`), with the same value.
Inputs: image_features (B, D), text_features (B, D), L2-normalised; image_ids (B,) or None.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.losses import LOSSES, LossOptions, ScaledLoss, positive_targets, same_image
from pipeline.losses.blocked import LARGE_BATCH, blocked_sum, row_ids
from pipeline.losses.hard_negatives import reweight_logits


@dataclass(frozen=True)
class ClipOptions(LossOptions):
    temperature: float = 0.07  # initial; learned unless model.learnable_temp is false


def symmetric_cross_entropy(
    cosine: torch.Tensor, scale: torch.Tensor, image_ids, hard_negative_beta: float = 0.0, label_smoothing: float = 0.0
) -> torch.Tensor:
    """½ (CE(s·C, Y) + CE(s·Cᵀ, Yᵀ)) for (B, B) cosines C; Y are image-id targets, optionally smoothed."""
    logits, batch = scale * cosine, cosine.shape[0]
    targets = positive_targets(image_ids, batch, logits.device)
    if label_smoothing:
        targets = (1 - label_smoothing) * targets + label_smoothing / batch
    positives = same_image(image_ids, batch, logits.device)
    similarity = cosine.detach()
    i2t = reweight_logits(logits, similarity, positives, hard_negative_beta)
    t2i = reweight_logits(logits.T, similarity.T, positives.T, hard_negative_beta)
    return 0.5 * (F.cross_entropy(i2t, targets) + F.cross_entropy(t2i, targets.T))


def infonce_rows(rows, ids, others, other_ids, scale, hard_negative_beta: float, label_smoothing: float):
    """Σ over `rows` (k, D) of CE(s · rows othersᵀ, Y): each row's soft target spreads over the `others` (B, D)
    sharing its id (`ids` (k,), `other_ids` (B,)), optionally smoothed; negatives hard-weighted by β."""
    cosine = rows @ others.T
    positives = ids[:, None] == other_ids[None, :]
    targets = positives.float() / positives.sum(dim=1, keepdim=True)
    if label_smoothing:
        targets = (1 - label_smoothing) * targets + label_smoothing / len(others)
    logits = reweight_logits(scale * cosine, cosine.detach(), positives, hard_negative_beta)
    return F.cross_entropy(logits, targets, reduction="sum")


def symmetric_infonce(image_features, text_features, scale, image_ids, hard_negative_beta=0.0, label_smoothing=0.0):
    """`symmetric_cross_entropy` of (B, D) features: the (B, B) matrix at once, or above `LARGE_BATCH` rows a
    block of rows per direction (`blocked_sum`)."""
    batch = len(image_features)
    if batch <= LARGE_BATCH:
        cosine = image_features @ text_features.T
        return symmetric_cross_entropy(cosine, scale, image_ids, hard_negative_beta, label_smoothing)
    ids = row_ids(image_ids, batch, image_features.device)
    options = (scale, hard_negative_beta, label_smoothing)
    i2t = blocked_sum(infonce_rows, image_features, ids, text_features, ids, *options)
    t2i = blocked_sum(infonce_rows, text_features, ids, image_features, ids, *options)
    return 0.5 * (i2t + t2i) / batch


@LOSSES.register("clip")
class ClipLoss(ScaledLoss):
    def __init__(self, options: ClipOptions, learnable_temperature: bool = True):
        super().__init__(options.temperature, learnable_temperature)
        self.hard_negative_beta = options.hard_negative_beta

    def forward(self, image_features, text_features, image_ids=None) -> torch.Tensor:
        return symmetric_infonce(image_features, text_features, self.scale(), image_ids, self.hard_negative_beta)
