"""ALIGN loss: normalised softmax contrastive loss with a learnable temperature and label smoothing
(Jia et al., 2021, "Scaling Up Visual and Vision-Language Representation Learning With Noisy Text").

logits = C / τ with C = I Tᵀ; targets are the image-id targets smoothed towards uniform:
Y' = (1 − ε) Y + ε / B (ALIGN uses ε = 0.1); loss = ½ (CE(logits, Y') + CE(logitsᵀ, Y'ᵀ)).
With ε = 0 this is the CLIP loss. Inputs: image_features (B, D), text_features (B, D),
L2-normalised; image_ids (B,) or None.
"""

from dataclasses import dataclass

import torch

from pipeline.losses import LOSSES, ScaledLoss
from pipeline.losses.clip import ClipOptions, symmetric_infonce


@dataclass(frozen=True)
class AlignLossOptions(ClipOptions):
    label_smoothing: float = 0.1


@LOSSES.register("align")
class AlignLoss(ScaledLoss):
    def __init__(self, options: AlignLossOptions, learnable_temperature: bool = True):
        super().__init__(options.temperature, learnable_temperature)
        self.label_smoothing, self.hard_negative_beta = options.label_smoothing, options.hard_negative_beta

    def forward(self, image_features, text_features, image_ids=None) -> torch.Tensor:
        return symmetric_infonce(
            image_features, text_features, self.scale(), image_ids, self.hard_negative_beta, self.label_smoothing
        )
