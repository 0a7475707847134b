"""BLIP/ALBEF-style heads with momentum copies (Li et al., 2021; 2022).

The online heads are the `mlp` heads (same options, plus `momentum`). Each has an
exponential-moving-average copy, θ_m ← m θ_m + (1 − m) θ with m = `momentum` (0.995), which
`momentum_features` updates and runs for every training batch; the `blip` loss uses those features
as its distillation targets and queued keys. The copies are frozen parameters (saved in the
checkpoint, never optimised); evaluation uses the online heads. Input (B, D_in) → (B, output_dim).
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.heads import HEADS, HeadPair
from pipeline.heads.mlp import MLPOptions, mlp_heads


@dataclass(frozen=True)
class BlipOptions(MLPOptions):
    momentum: float = 0.995  # EMA decay of the momentum copies


class MomentumHeadPair(HeadPair):
    """A head pair plus its EMA copy (`momentum_image_head`, `momentum_text_head`)."""

    def __init__(self, image_head, text_head, momentum: float):
        super().__init__(image_head, text_head)
        self.momentum = momentum
        self.momentum_image_head = copy.deepcopy(image_head).requires_grad_(False)
        self.momentum_text_head = copy.deepcopy(text_head).requires_grad_(False)

    def _pairs(self):
        for online, ema in ((self.image_head, self.momentum_image_head), (self.text_head, self.momentum_text_head)):
            yield from zip(online.parameters(), ema.parameters())

    @torch.no_grad()
    def update_momentum(self) -> None:
        for online, ema in self._pairs():
            ema.mul_(self.momentum).add_(online.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def momentum_features(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the EMA copies, then (B, D) image and (B, D) text features from them (no gradient)."""
        self.update_momentum()
        return (
            F.normalize(self.momentum_image_head(image), dim=-1),
            F.normalize(self.momentum_text_head(text), dim=-1),
        )


@HEADS.register("blip")
def blip_heads(image_dim: int, text_dim: int, options: BlipOptions) -> MomentumHeadPair:
    online = mlp_heads(image_dim, text_dim, options)
    return MomentumHeadPair(online.image_head, online.text_head, options.momentum)
