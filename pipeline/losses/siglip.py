"""SigLIP loss: pairwise sigmoid loss with learnable scale and bias (Zhai et al., 2023).

logits = s · I Tᵀ + b, labels z = +1 for pairs of the same image and −1 otherwise;
loss = −Σ log σ(z · logits) / B. s = exp(logit_scale) starts at 1/temperature (10 by default,
logit_scale = ln 10) and is clamped at 100; b starts at −10. With no repeated image ids this equals
open_clip's `SigLipLoss` at the same scale and bias; captions of one image are all positives.
Inputs: image_features (B, D), text_features (B, D), L2-normalised; image_ids (B,) or None.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.losses import LOSSES, same_image
from pipeline.losses.clip import MAX_LOGIT_SCALE
from pipeline.losses.hard_negatives import negative_weights


@LOSSES.register("siglip")
class SigLipLoss(nn.Module):
    def __init__(
        self,
        temperature: float = 0.1,
        bias: float = -10.0,
        learnable_temperature: bool = True,
        hard_negative_beta: float = 0.0,
    ):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable_temperature)
        self.logit_bias = nn.Parameter(torch.tensor(float(bias)))
        self.hard_negative_beta = hard_negative_beta

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, image_features, text_features, image_ids=None) -> torch.Tensor:
        cosine = image_features @ text_features.T
        logits = self.scale() * cosine + self.logit_bias
        positives = same_image(image_ids, len(cosine), cosine.device)
        labels = 2.0 * positives.float() - 1.0
        weights = negative_weights(cosine.detach(), positives, self.hard_negative_beta)
        return -(weights * F.logsigmoid(labels * logits)).sum() / len(cosine)
