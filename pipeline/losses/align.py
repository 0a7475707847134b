"""ALIGN loss: normalised softmax contrastive loss with a learnable temperature and label smoothing
(Jia et al., 2021, "Scaling Up Visual and Vision-Language Representation Learning With Noisy Text").

logits = C / τ with C = I Tᵀ; targets are the image-id targets smoothed towards uniform:
Y' = (1 − ε) Y + ε / B (ALIGN uses ε = 0.1); loss = ½ (CE(logits, Y') + CE(logitsᵀ, Y'ᵀ)).
With ε = 0 this is the CLIP loss. Inputs: image_features (B, D), text_features (B, D),
L2-normalised; image_ids (B,) or None.
"""

import math

import torch
from torch import nn

from pipeline.losses import LOSSES
from pipeline.losses.clip import MAX_LOGIT_SCALE, symmetric_cross_entropy


@LOSSES.register("align")
class AlignLoss(nn.Module):
    def __init__(
        self,
        temperature: float = 0.07,
        label_smoothing: float = 0.1,
        learnable_temperature: bool = True,
        hard_negative_beta: float = 0.0,
    ):
        super().__init__()
        self.log_inverse_temperature = nn.Parameter(
            torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable_temperature
        )
        self.label_smoothing, self.hard_negative_beta = label_smoothing, hard_negative_beta

    def scale(self) -> torch.Tensor:
        return self.log_inverse_temperature.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, image_features, text_features, image_ids=None) -> torch.Tensor:
        cosine = image_features @ text_features.T
        return symmetric_cross_entropy(
            cosine, self.scale(), image_ids, self.hard_negative_beta, label_smoothing=self.label_smoothing
        )
