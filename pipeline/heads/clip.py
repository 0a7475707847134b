"""CLIP-style heads (Radford et al., 2021): LayerNorm, a hidden GELU layer, and a bias-free projection.

CLIP maps each tower's final LayerNorm'd feature to the joint space with a bias-free linear map; here
a hidden layer of `hidden_dim` (GELU, dropout) comes first, since the cached features come from frozen
towers trained for another space. The temperature lives in the `clip` loss (`model.learnable_temp`).
Input (B, D_in) → output (B, output_dim).
"""

from dataclasses import dataclass

from torch import nn

from pipeline.heads import HEADS, HeadPair, ProjectionOptions


@dataclass(frozen=True)
class ClipHeadOptions(ProjectionOptions):
    """output_dim, hidden_dim, dropout."""


def clip_head(input_dim: int, hidden_dim: int, output_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(input_dim),
        nn.Linear(input_dim, hidden_dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, output_dim, bias=False),
    )


@HEADS.register("clip")
def clip_heads(image_dim: int, text_dim: int, options: ClipHeadOptions) -> HeadPair:
    o = options
    return HeadPair(
        clip_head(image_dim, o.hidden_dim, o.output_dim, o.dropout),
        clip_head(text_dim, o.hidden_dim, o.output_dim, o.dropout),
    )
