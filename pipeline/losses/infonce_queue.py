"""InfoNCE with a MoCo-style queue of negatives (He et al., 2020, "Momentum Contrast").

Each image is contrasted with the batch's captions plus the last `queue_size` captions seen (and each
caption with images likewise): logits = s · [I Tᵀ | I T_queueᵀ]. Queued features are detached copies
from earlier steps (the features of this head pair; pair with `model.type: blip` and the `blip` loss
for momentum encoders). Queued entries with the same image id are positives, not negatives.
State: the queue (in `state_dict`); each call enqueues the batch, and `queue_size` must be a
multiple of the batch size. Inputs: image_features (B, D), text_features (B, D), L2-normalised;
image_ids (B,) int or None.
"""

from dataclasses import dataclass

import torch

from pipeline.losses import LOSSES, ScaledLoss
from pipeline.losses.clip import ClipOptions
from pipeline.losses.queue import FeatureQueue, queue_positives, soft_cross_entropy, with_queue


@dataclass(frozen=True)
class QueueOptions(ClipOptions):
    queue_size: int = 4096  # must be a multiple of training.batch_size


@LOSSES.register("infonce_queue")
class InfoNCEQueueLoss(ScaledLoss):
    def __init__(self, options: QueueOptions, learnable_temperature: bool = True):
        super().__init__(options.temperature, learnable_temperature)
        self.queue = FeatureQueue(options.queue_size)
        self.hard_negative_beta = options.hard_negative_beta

    def forward(self, image_features, text_features, image_ids=None) -> torch.Tensor:
        queued_image, queued_text, queued_ids = self.queue.keys()
        positives = queue_positives(image_ids, queued_ids, len(image_features), image_features.device)
        targets = positives.float() / positives.sum(dim=1, keepdim=True)
        i2t = image_features @ with_queue(text_features, queued_text).T
        t2i = text_features @ with_queue(image_features, queued_image).T
        scale, beta = self.scale(), self.hard_negative_beta
        loss = 0.5 * (
            soft_cross_entropy(i2t, scale, targets, positives, beta)
            + soft_cross_entropy(t2i, scale, targets, positives, beta)
        )
        self.queue.enqueue(image_features.detach(), text_features.detach(), image_ids)
        return loss
