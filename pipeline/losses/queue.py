"""A ring buffer of past (detached) image and text features with their image ids, for queue-based losses.

The buffers are allocated on the first `enqueue` (the feature dim is not known before) and are part
of the loss's `state_dict`, so a resumed run continues with the same queue. Only filled slots are
ever used as keys; the size must be a multiple of the batch (MoCo/ALBEF's rule), so a batch never wraps.
"""

import torch
from torch import nn

from encoding.errors import BadInput
from pipeline.losses.hard_negatives import reweight_logits

NO_ID = -1


class FeatureQueue(nn.Module):
    """Holds up to `size` (image, text, image id) triples; `keys()` gives the filled part."""

    def __init__(self, size: int):
        super().__init__()
        if size < 1:
            raise BadInput(f"loss.queue_size {size}: expected a positive number of queued features")
        self.size = size
        self.register_buffer("image", torch.zeros(0, 0))
        self.register_buffer("text", torch.zeros(0, 0))
        self.register_buffer("ids", torch.full((size,), NO_ID, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("image", "text"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.ids.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def keys(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q, D) image features, (Q, D) text features and (Q,) ids of the Q filled slots."""
        filled = int(self.filled)
        if filled == 0:
            return None, None, self.ids[:0]
        return self.image[:filled], self.text[:filled], self.ids[:filled]

    @torch.no_grad()
    def enqueue(self, image: torch.Tensor, text: torch.Tensor, image_ids: torch.Tensor | None) -> None:
        """Store a (B, D) batch at the pointer, overwriting the oldest entries."""
        batch = len(image)
        if self.size % batch:
            raise BadInput(f"loss.queue_size {self.size} must be a multiple of the batch size {batch}")
        if self.image.shape != (self.size, image.shape[1]):
            self.image = image.new_zeros(self.size, image.shape[1])
            self.text = image.new_zeros(self.size, image.shape[1])
        start = int(self.pointer)
        self.image[start : start + batch] = image.float()
        self.text[start : start + batch] = text.float()
        self.ids[start : start + batch] = NO_ID if image_ids is None else image_ids
        self.pointer.fill_((start + batch) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + batch))


def with_queue(batch: torch.Tensor, queued: torch.Tensor | None) -> torch.Tensor:
    """(B + Q, D) keys: the batch's own features, then the queue's."""
    return batch if queued is None else torch.cat([batch, queued])


def queue_positives(image_ids: torch.Tensor | None, queue_ids: torch.Tensor, batch: int, device) -> torch.Tensor:
    """(B, B + Q) bool: same image; without ids only the diagonal (queued features are never positives)."""
    if image_ids is None:
        eye = torch.eye(batch, dtype=torch.bool, device=device)
        return torch.cat([eye, torch.zeros(batch, len(queue_ids), dtype=torch.bool, device=device)], dim=1)
    return image_ids[:, None] == torch.cat([image_ids, queue_ids])[None, :]


def soft_cross_entropy(cosine, scale, targets, positives, hard_negative_beta: float = 0.0) -> torch.Tensor:
    """Mean over rows of −Σ targets · log softmax(scale · cosine) for (B, K) cosines and (B, K) targets."""
    logits = reweight_logits(scale * cosine, cosine.detach(), positives, hard_negative_beta)
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
