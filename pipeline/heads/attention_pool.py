"""Attention-pooling heads: learned queries cross-attend over an item's tokens (SigLIP's MAP head).

Multihead attention pooling (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training";
big_vision `MAPHead`: probe → MultiheadAttention over the tokens → x + MLP(LayerNorm(x))). Tokens
(B, T, D_in) are LayerNorm'd, projected to `hidden_dim`, given sinusoidal positions and a LayerNorm
(the norm a ViT applies before its MAP head). `num_queries` learned queries (B, Q, W) then pass `num_layers`
pre-norm blocks, q + Attn(LN(q), tokens) then q + MLP(LN(q)) (MLP width 4·W); with the defaults
(one query, one block) this is the MAP head. The Q outputs are averaged (so Q only adds capacity,
never changes the output width), then LayerNorm → Linear to `output_dim`. Padded caption tokens are
masked out of the attention's keys. Output (B, output_dim).
"""

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.heads import HEADS
from pipeline.heads.token_pair import (
    TokenEmbedding,
    TokenHeadOptions,
    TokenHeadPair,
    check_heads,
    output_layer,
    padding_mask,
)


@dataclass(frozen=True)
class AttentionPoolOptions(TokenHeadOptions):
    num_layers: int = 1  # query blocks; 1 = the MAP head
    num_queries: int = 1  # learned queries, averaged after the last block


class QueryBlock(nn.Module):
    """(B, Q, W) queries, (B, T, W) tokens → (B, Q, W): q + Attn(LN(q), tokens), then q + MLP(LN(q))."""

    def __init__(self, width: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm_query, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width)
        )

    def forward(self, queries, tokens, key_padding_mask=None) -> torch.Tensor:
        attended = self.attention(
            self.norm_query(queries), tokens, tokens, key_padding_mask=key_padding_mask, need_weights=False
        )[0]
        queries = queries + attended
        return queries + self.mlp(self.norm_mlp(queries))


class AttentionPool(nn.Module):
    """(B, T, D_in) tokens, mask (B, T) or None → (B, output_dim)."""

    def __init__(self, input_dim: int, options: AttentionPoolOptions):
        super().__init__()
        o = options
        self.embed = nn.Sequential(TokenEmbedding(input_dim, o.hidden_dim), nn.LayerNorm(o.hidden_dim))
        self.queries = nn.Parameter(torch.randn(1, o.num_queries, o.hidden_dim) * o.hidden_dim**-0.5)
        self.blocks = nn.ModuleList(QueryBlock(o.hidden_dim, o.num_heads, o.dropout) for _ in range(o.num_layers))
        self.out = output_layer(o.hidden_dim, o.output_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.embed(tokens)
        queries = self.queries.expand(len(tokens), -1, -1)
        for block in self.blocks:
            queries = block(queries, tokens, padding_mask(mask))
        return self.out(queries.mean(dim=1))


@HEADS.register("attention_pool")
def attention_pool_heads(image_dim: int, text_dim: int, options: AttentionPoolOptions) -> TokenHeadPair:
    check_heads(options.hidden_dim, options.num_heads)
    return TokenHeadPair(AttentionPool(image_dim, options), AttentionPool(text_dim, options))
