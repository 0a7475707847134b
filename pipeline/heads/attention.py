"""Self-attention refinement heads: each embedding is split into tokens that attend to each other.

A cache holds one vector per item, so there is no sequence to attend over. The head projects the
(B, D_in) input to `hidden_dim` and reshapes it into `num_tokens` tokens of width
hidden_dim / num_tokens (B, T, W); `num_layers` pre-norm Transformer encoder layers (`num_heads`
heads) let the tokens of one item attend to each other; the refined tokens are flattened, added to
the projection (residual) and mapped by LayerNorm → Linear to `output_dim`. Items never attend to
other items, so images and captions are still embedded independently (as retrieval requires).
"""

from dataclasses import dataclass

import torch
from torch import nn

from encoding.errors import BadInput
from pipeline.heads import HEADS, HeadPair, ProjectionOptions


@dataclass(frozen=True)
class AttentionOptions(ProjectionOptions):
    num_heads: int = 4
    num_layers: int = 2
    num_tokens: int = 8  # tokens each vector is split into (hidden_dim / num_tokens wide)


def token_width(hidden_dim: int, num_tokens: int, num_heads: int) -> int:
    """Width of one token; BadInput unless hidden_dim splits into tokens whose width splits into heads."""
    if num_tokens < 1 or hidden_dim % num_tokens or (hidden_dim // num_tokens) % num_heads:
        raise BadInput(
            f"model.hidden_dim {hidden_dim} must split into model.num_tokens {num_tokens} tokens whose width "
            f"divides by model.num_heads {num_heads}"
        )
    return hidden_dim // num_tokens


class TokenRefiner(nn.Module):
    """(B, D_in) → (B, output_dim) through `layers` applied to the input split into tokens."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_tokens: int, layers: nn.Module):
        super().__init__()
        self.num_tokens = num_tokens
        self.project = nn.Linear(input_dim, hidden_dim)
        self.layers = layers
        self.out = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.project(x)
        tokens = hidden.unflatten(-1, (self.num_tokens, -1))  # (B, T, W)
        return self.out(hidden + self.layers(tokens).flatten(1))


def pre_norm_layer(kind: type[nn.Module], width: int, num_heads: int, dropout: float) -> nn.Module:
    """A pre-norm Transformer layer of `kind` (encoder or decoder layer): feed-forward 4·width, GELU, batch first."""
    return kind(
        width,
        num_heads,
        dim_feedforward=4 * width,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


def self_attention_stack(width: int, num_heads: int, num_layers: int, dropout: float) -> nn.Module:
    layer = pre_norm_layer(nn.TransformerEncoderLayer, width, num_heads, dropout)
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


@HEADS.register("attention")
def attention_heads(image_dim: int, text_dim: int, options: AttentionOptions) -> HeadPair:
    o = options
    width = token_width(o.hidden_dim, o.num_tokens, o.num_heads)

    def head(input_dim: int) -> TokenRefiner:
        layers = self_attention_stack(width, o.num_heads, o.num_layers, o.dropout)
        return TokenRefiner(input_dim, o.hidden_dim, o.output_dim, o.num_tokens, layers)

    return HeadPair(head(image_dim), head(text_dim))
