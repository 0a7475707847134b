"""CLIP loss: symmetric InfoNCE with a learnable temperature (Radford et al., 2021).

logits = s · I Tᵀ with s = exp(logit_scale) clamped at 100; loss = ½ (CE(logits, Y) + CE(logitsᵀ, Yᵀ))
with Y the image-id soft targets. Without repeated image ids this equals open_clip's `ClipLoss`.
Inputs: image_features (B, D), text_features (B, D), L2-normalised; image_ids (B,) or None.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.losses import LOSSES, positive_targets

MAX_LOGIT_SCALE = 100.0


@LOSSES.register("clip")
class ClipLoss(nn.Module):
    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = True):
        super().__init__()
        scale = torch.tensor(math.log(1.0 / temperature))
        self.logit_scale = nn.Parameter(scale, requires_grad=learnable_temperature)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, image_features, text_features, image_ids=None) -> torch.Tensor:
        logits = self.scale() * image_features @ text_features.T
        targets = positive_targets(image_ids, logits.shape[0], logits.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T))
