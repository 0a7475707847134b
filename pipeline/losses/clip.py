"""CLIP loss: symmetric InfoNCE with a learnable (or fixed) temperature (Radford et al., 2021).

logits = s · I Tᵀ with s = exp(logit_scale) clamped at 100; loss = ½ (CE(logits, Y) + CE(logitsᵀ, Yᵀ))
with Y the image-id soft targets. Without repeated image ids this equals open_clip's `ClipLoss`.
Inputs: image_features (B, D), text_features (B, D), L2-normalised; image_ids (B,) or None.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.losses import LOSSES, positive_targets, same_image
from pipeline.losses.hard_negatives import reweight_logits

MAX_LOGIT_SCALE = 100.0


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


@LOSSES.register("clip")
class ClipLoss(nn.Module):
    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = True, hard_negative_beta: float = 0.0):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable_temperature)
        self.hard_negative_beta = hard_negative_beta

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, image_features, text_features, image_ids=None) -> torch.Tensor:
        cosine = image_features @ text_features.T
        return symmetric_cross_entropy(cosine, self.scale(), image_ids, self.hard_negative_beta)
