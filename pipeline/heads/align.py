"""ALIGN-style heads (Jia et al., 2021): a wide hidden layer with BatchNorm.

Linear → BatchNorm (LayerNorm with `use_bn: false`) → ReLU → Dropout → Linear, with a larger hidden
width by default (2048). BatchNorm uses batch statistics in training and running averages at
evaluation; under DDP each rank normalises with its own share of the batch.
Input (B, D_in) → output (B, output_dim).
"""

from dataclasses import dataclass

from torch import nn

from pipeline.heads import HEADS, HeadPair, ProjectionOptions


@dataclass(frozen=True)
class AlignOptions(ProjectionOptions):
    hidden_dim: int = 2048
    use_bn: bool = True


def align_head(input_dim: int, hidden_dim: int, output_dim: int, dropout: float, use_bn: bool) -> nn.Sequential:
    norm = nn.BatchNorm1d(hidden_dim) if use_bn else nn.LayerNorm(hidden_dim)
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim), norm, nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, output_dim)
    )


@HEADS.register("align")
def align_heads(image_dim: int, text_dim: int, options: AlignOptions) -> HeadPair:
    o = options
    return HeadPair(
        align_head(image_dim, o.hidden_dim, o.output_dim, o.dropout, o.use_bn),
        align_head(text_dim, o.hidden_dim, o.output_dim, o.dropout, o.use_bn),
    )
