"""BLIP/ALBEF image–text contrastive loss with momentum distillation and feature queues
(Li et al., 2021, "Align before Fuse"; Li et al., 2022, "BLIP").

Keys are the momentum features of the batch plus `queue_size` queued momentum features. Targets mix
the image-id targets with the momentum model's own similarity distribution:
Y = α · softmax(s · I_m K_Tᵀ) + (1 − α) · Y_ids (α = 0.4 by default), and
loss = ½ (CE(s · I K_Tᵀ, Y_i2t) + CE(s · T K_Iᵀ, Y_t2i)). The temperature is learnable and, as in
ALBEF, clamped to [0.001, 0.5].

Call: `loss(image_features, text_features, image_ids=None, momentum_features=None)`.
`momentum_features` is the (B, D) image and (B, D) text features of the same batch from the momentum
(EMA) copies of the heads — `HeadPair.momentum_features(image_inputs, text_inputs)`, which the `blip`
head implements with real EMA copies (the engine passes them). Without it the online features,
detached, stand in (momentum 0). State: the queues (in `state_dict`); each call enqueues the batch's
momentum features, and `queue_size` must be a multiple of the batch size.
"""

import torch
from torch import nn

from pipeline.losses import LOSSES
from pipeline.losses.queue import FeatureQueue, queue_positives, soft_cross_entropy, with_queue

TEMPERATURE_RANGE = (0.001, 0.5)


@LOSSES.register("blip")
class BlipLoss(nn.Module):
    def __init__(
        self,
        temperature: float = 0.07,
        alpha: float = 0.4,
        queue_size: int = 4096,
        learnable_temperature: bool = True,
        hard_negative_beta: float = 0.0,
    ):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(float(temperature)), requires_grad=learnable_temperature)
        self.alpha, self.hard_negative_beta = alpha, hard_negative_beta
        self.queue = FeatureQueue(queue_size)

    def scale(self) -> torch.Tensor:
        return 1.0 / self.temperature.clamp(*TEMPERATURE_RANGE)

    def forward(self, image_features, text_features, image_ids=None, momentum_features=None) -> torch.Tensor:
        with torch.no_grad():
            self.temperature.clamp_(*TEMPERATURE_RANGE)
            image_m, text_m = momentum_features or (image_features, text_features)
            image_m, text_m = image_m.detach().float(), text_m.detach().float()
            queued_image, queued_text, queued_ids = self.queue.keys()
            image_keys, text_keys = with_queue(image_m, queued_image), with_queue(text_m, queued_text)
            positives = queue_positives(image_ids, queued_ids, len(image_features), image_features.device)
            targets = positives.float() / positives.sum(dim=1, keepdim=True)
            scale = self.scale()
            i2t_targets = self.alpha * torch.softmax(scale * image_m @ text_keys.T, dim=1) + (1 - self.alpha) * targets
            t2i_targets = self.alpha * torch.softmax(scale * text_m @ image_keys.T, dim=1) + (1 - self.alpha) * targets
        scale, beta = 1.0 / self.temperature, self.hard_negative_beta
        loss = 0.5 * (
            soft_cross_entropy(image_features @ text_keys.T, scale, i2t_targets, positives, beta)
            + soft_cross_entropy(text_features @ image_keys.T, scale, t2i_targets, positives, beta)
        )
        self.queue.enqueue(image_m, text_m, image_ids)
        return loss
