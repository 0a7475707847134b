"""SigLIP loss: pairwise sigmoid loss with learnable scale and bias (Zhai et al., 2023).

logits = s · I Tᵀ + b, labels z = +1 for pairs of the same image and −1 otherwise;
loss = −Σ log σ(z · logits) / B. s = exp(logit_scale) starts at 1/temperature (10 by default,
logit_scale = ln 10) and is kept in [1, 100]; b starts at −10. With no repeated image ids this equals
open_clip's `SigLipLoss` at the same scale and bias; captions of one image are all positives. Batches above
`blocked.LARGE_BATCH` are summed a block of rows at a time (`sigmoid_rows`), with the same value.
Inputs: image_features (B, D), text_features (B, D), L2-normalised; image_ids (B,) or None.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.losses import LOSSES, LossOptions, ScaledLoss
from pipeline.losses.blocked import LARGE_BATCH, blocked_sum, row_ids
from pipeline.losses.hard_negatives import negative_weights


@dataclass(frozen=True)
class SiglipLossOptions(LossOptions):
    temperature: float = 0.1  # initial: logit scale 10
    bias: float = -10.0  # initial logit bias


@LOSSES.register("siglip")
class SigLipLoss(ScaledLoss):
    def __init__(self, options: SiglipLossOptions, learnable_temperature: bool = True):
        super().__init__(options.temperature, learnable_temperature)
        self.logit_bias = nn.Parameter(torch.tensor(float(options.bias)))
        self.hard_negative_beta = options.hard_negative_beta

    def forward(self, image_features, text_features, image_ids=None) -> torch.Tensor:
        batch = len(image_features)
        ids = row_ids(image_ids, batch, image_features.device)
        shared = (text_features, ids, self.scale(), self.logit_bias, self.hard_negative_beta)
        if batch <= LARGE_BATCH:
            return sigmoid_rows(image_features, ids, *shared) / batch
        return blocked_sum(sigmoid_rows, image_features, ids, *shared) / batch


def sigmoid_rows(rows, ids, others, other_ids, scale, bias, hard_negative_beta: float) -> torch.Tensor:
    """−Σ w log σ(z (s · rows othersᵀ + b)) over the (k, B) pairs of `rows` (k, D) with `others` (B, D); z = +1
    where the ids match (`ids` (k,), `other_ids` (B,)), w the hard-negative weights."""
    cosine = rows @ others.T
    positives = ids[:, None] == other_ids[None, :]
    labels = 2.0 * positives.float() - 1.0
    weights = negative_weights(cosine.detach(), positives, hard_negative_beta)
    return -(weights * F.logsigmoid(labels * (scale * cosine + bias))).sum()
