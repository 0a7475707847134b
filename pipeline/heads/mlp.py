"""MLP heads of configurable depth, plain or with FuseMix-style residual blocks.

Plain (`residual: false`): `num_layers` × [LayerNorm → Linear → GELU → Dropout], then a linear
projection. Residual (`residual: true`, the FuseMix fusion adapter, Vouitsis et al., 2024): a linear
input projection to `hidden_dim`, `num_layers` pre-norm blocks x + Dropout(Linear(GELU(Linear(LN(x))))),
then LayerNorm → Linear to `output_dim`. Input (B, D_in) → output (B, output_dim).
"""

from dataclasses import dataclass

from torch import nn

from pipeline.heads import HEADS, HeadPair, ProjectionOptions


@dataclass(frozen=True)
class MLPOptions(ProjectionOptions):
    num_layers: int = 1
    residual: bool = False  # FuseMix residual blocks instead of plain layers


def mlp(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, dropout: float) -> nn.Sequential:
    """(B, input_dim) → (B, output_dim) through `num_layers` hidden blocks of width `hidden_dim`."""
    layers, width = [], input_dim
    for _ in range(num_layers):
        layers += [nn.LayerNorm(width), nn.Linear(width, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
        width = hidden_dim
    return nn.Sequential(*layers, nn.Linear(width, output_dim))


class ResidualBlock(nn.Module):
    """(B, W) → (B, W): x + Dropout(Linear(GELU(Linear(LayerNorm(x)))))."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width), nn.Dropout(dropout)
        )

    def forward(self, x):
        return x + self.body(x)


def residual_mlp(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, dropout: float) -> nn.Sequential:
    """(B, input_dim) → (B, output_dim): projection, `num_layers` residual blocks, LayerNorm, projection."""
    blocks = [ResidualBlock(hidden_dim, dropout) for _ in range(num_layers)]
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim), *blocks, nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, output_dim)
    )


@HEADS.register("mlp")
def mlp_heads(image_dim: int, text_dim: int, options: MLPOptions) -> HeadPair:
    o, make = options, residual_mlp if options.residual else mlp
    return HeadPair(
        make(image_dim, o.hidden_dim, o.output_dim, o.num_layers, o.dropout),
        make(text_dim, o.hidden_dim, o.output_dim, o.num_layers, o.dropout),
    )
