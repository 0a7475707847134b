"""MLP heads: LayerNorm → Linear → GELU → Dropout blocks, then a linear projection."""

from torch import nn

from pipeline.heads import HEADS, HeadPair


def mlp(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, dropout: float) -> nn.Sequential:
    """(B, input_dim) → (B, output_dim) through `num_layers` hidden blocks of width `hidden_dim`."""
    layers, width = [], input_dim
    for _ in range(num_layers):
        layers += [nn.LayerNorm(width), nn.Linear(width, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
        width = hidden_dim
    return nn.Sequential(*layers, nn.Linear(width, output_dim))


@HEADS.register("mlp")
def mlp_heads(
    image_dim: int,
    text_dim: int,
    output_dim: int = 256,
    hidden_dim: int = 512,
    num_layers: int = 1,
    dropout: float = 0.1,
) -> HeadPair:
    return HeadPair(
        mlp(image_dim, hidden_dim, output_dim, num_layers, dropout),
        mlp(text_dim, hidden_dim, output_dim, num_layers, dropout),
    )
