"""BLIP/ALBEF image–text contrastive loss with momentum distillation and feature queues
(Li et al., 2021, "Align before Fuse"; Li et al., 2022, "BLIP").

Keys are the momentum features of the batch plus `queue_size` queued momentum features. Targets mix
the image-id targets with the momentum model's own similarity distribution:
Y = α · softmax(s · I_m K_Tᵀ) + (1 − α) · Y_ids (α = 0.4 by default), and
loss = ½ (CE(s · I K_Tᵀ, Y_i2t) + CE(s · T K_Iᵀ, Y_t2i)). As in ALBEF, α ramps linearly from 0 over
the first epoch (`alpha_warmup`: the momentum model is random at the start), and the learnable
temperature is kept in [0.001, 0.5].

Call: `loss(image_features, text_features, image_ids=None, momentum_features=None, progress=None)`.
`momentum_features` is the (B, D) image and (B, D) text features of the same batch from the momentum
(EMA) copies of the heads — `HeadPair.momentum_features(image_inputs, text_inputs)`, which the `blip`
head implements with real EMA copies (the trainer passes them). Without it the online features,
detached, stand in (momentum 0). `progress` is the training progress in epochs (the trainer passes
step / steps_per_epoch); None means past the warm-up (full α). State: the queues (in `state_dict`);
each call enqueues the batch's momentum features, and `queue_size` must be a multiple of the batch.
"""

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.losses import LOSSES
from pipeline.losses.clip import ClipOptions
from pipeline.losses.queue import FeatureQueue, queue_positives, soft_cross_entropy, with_queue

TEMPERATURE_RANGE = (0.001, 0.5)


@dataclass(frozen=True)
class BlipLossOptions(ClipOptions):
    alpha: float = 0.4  # weight of the momentum model's targets
    alpha_warmup: bool = True  # ramp α from 0 over the first epoch (ALBEF)
    queue_size: int = 4096  # must be a multiple of training.batch_size


@LOSSES.register("blip")
class BlipLoss(nn.Module):
    def __init__(self, options: BlipLossOptions, learnable_temperature: bool = True):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(float(options.temperature)), requires_grad=learnable_temperature)
        self.alpha, self.alpha_warmup = options.alpha, options.alpha_warmup
        self.hard_negative_beta = options.hard_negative_beta
        self.queue = FeatureQueue(options.queue_size)
        self.clamp_()

    def scale(self) -> torch.Tensor:
        return 1.0 / self.temperature

    @torch.no_grad()
    def clamp_(self) -> None:
        self.temperature.clamp_(*TEMPERATURE_RANGE)

    def current_alpha(self, progress: float | None) -> float:
        """α, ramped linearly over the first epoch when `alpha_warmup` is on."""
        if progress is None or not self.alpha_warmup:
            return self.alpha
        return self.alpha * min(1.0, progress)

    def forward(
        self, image_features, text_features, image_ids=None, momentum_features=None, progress=None
    ) -> torch.Tensor:
        alpha = self.current_alpha(progress)
        with torch.no_grad():
            image_m, text_m = momentum_features or (image_features, text_features)
            image_m, text_m = image_m.detach().float(), text_m.detach().float()
            queued_image, queued_text, queued_ids = self.queue.keys()
            image_keys, text_keys = with_queue(image_m, queued_image), with_queue(text_m, queued_text)
            positives = queue_positives(image_ids, queued_ids, len(image_features), image_features.device)
            targets = positives.float() / positives.sum(dim=1, keepdim=True)
            scale = self.scale()
            i2t_targets = alpha * torch.softmax(scale * image_m @ text_keys.T, dim=1) + (1 - alpha) * targets
            t2i_targets = alpha * torch.softmax(scale * text_m @ image_keys.T, dim=1) + (1 - alpha) * targets
        scale, beta = self.scale(), self.hard_negative_beta
        loss = 0.5 * (
            soft_cross_entropy(image_features @ text_keys.T, scale, i2t_targets, positives, beta)
            + soft_cross_entropy(text_features @ image_keys.T, scale, t2i_targets, positives, beta)
        )
        self.queue.enqueue(image_m, text_m, image_ids)
        return loss
