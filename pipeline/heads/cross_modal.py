"""Cross-modal attention heads: both modalities attend to one shared bank of learned tokens.

What attends to what: each item's vector is projected to `hidden_dim` and split into `num_tokens`
tokens (B, T, W), as in the `attention` head. In each of `num_layers` layers the item's tokens are the
queries of a cross-attention whose keys and values are a bank of `num_tokens` learned tokens; the
bank (and the cross-attention weights) are shared by the image head and the text head, followed by
a feed-forward block. Image tokens and caption tokens are thus both rewritten in terms of the same
shared tokens — the cross-modal link — while every image and caption is still embedded on its own:
an image never attends to a particular caption, because retrieval embeds each gallery once, not per
query pair. Input (B, D_in) → output (B, output_dim).
"""

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.heads import HEADS, HeadPair
from pipeline.heads.attention import AttentionOptions, TokenRefiner, token_width


@dataclass(frozen=True)
class CrossModalOptions(AttentionOptions):
    num_layers: int = 1


class SharedBankLayer(nn.Module):
    """(B, T, W) → (B, T, W): x + CrossAttn(LN(x), bank), then x + FFN(LN(x))."""

    def __init__(self, bank: nn.Parameter, attention: nn.MultiheadAttention, width: int, dropout: float):
        super().__init__()
        self.bank, self.attention = bank, attention
        self.norm_query, self.norm_ffn = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        bank = self.bank.expand(len(tokens), -1, -1)
        tokens = tokens + self.attention(self.norm_query(tokens), bank, bank, need_weights=False)[0]
        return tokens + self.ffn(self.norm_ffn(tokens))


@HEADS.register("cross_modal")
def cross_modal_heads(image_dim: int, text_dim: int, options: CrossModalOptions) -> HeadPair:
    o = options
    width = token_width(o.hidden_dim, o.num_tokens, o.num_heads)
    banks = [nn.Parameter(torch.randn(1, o.num_tokens, width) * width**-0.5) for _ in range(o.num_layers)]
    attentions = [nn.MultiheadAttention(width, o.num_heads, dropout=o.dropout, batch_first=True) for _ in banks]

    def head(input_dim: int) -> TokenRefiner:
        layers = nn.Sequential(*(SharedBankLayer(b, a, width, o.dropout) for b, a in zip(banks, attentions)))
        return TokenRefiner(input_dim, o.hidden_dim, o.output_dim, o.num_tokens, layers)

    return HeadPair(head(image_dim), head(text_dim))
