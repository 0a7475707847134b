"""Token-transformer heads: dense self-attention layers over an item's tokens, then pooling.

A small Transformer encoder (Vaswani et al., 2017) over the cached tokens, a self-attention head over real
tokens. Tokens (B, T, D_in) are LayerNorm'd, projected to `hidden_dim` and given
sinusoidal positions; `num_layers` pre-norm encoder layers (`num_heads` heads, feed-forward 4·W,
GELU) attend over all T tokens of the item, with padded caption tokens masked out as keys; the
outputs are mean-pooled over the real tokens (masked mean, no CLS token), then LayerNorm → Linear to
`output_dim`. Attention is dense: time and memory grow with T² (see `sparse_attention` for the
linear version). Output (B, output_dim).
"""

import torch
from torch import nn

from pipeline.heads import HEADS
from pipeline.heads.attention import self_attention_stack
from pipeline.heads.token_pair import (
    TokenEmbedding,
    TokenHeadOptions,
    TokenHeadPair,
    check_heads,
    masked_mean,
    output_layer,
    padding_mask,
)


class TokenTransformer(nn.Module):
    """(B, T, D_in) tokens, mask (B, T) or None → (B, output_dim)."""

    def __init__(self, input_dim: int, options: TokenHeadOptions):
        super().__init__()
        o = options
        self.embed = TokenEmbedding(input_dim, o.hidden_dim)
        self.layers = self_attention_stack(o.hidden_dim, o.num_heads, o.num_layers, o.dropout)
        self.out = output_layer(o.hidden_dim, o.output_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.layers(self.embed(tokens), src_key_padding_mask=padding_mask(mask))
        return self.out(masked_mean(hidden, mask))


@HEADS.register("token_transformer")
def token_transformer_heads(image_dim: int, text_dim: int, options: TokenHeadOptions) -> TokenHeadPair:
    check_heads(options.hidden_dim, options.num_heads)
    return TokenHeadPair(TokenTransformer(image_dim, options), TokenTransformer(text_dim, options))
