"""Sparse-attention heads: sliding-window + global-token self-attention over an item's tokens.

Longformer's attention pattern (Beltagy et al., 2020), over real tokens.
Tokens (B, T, D_in) are LayerNorm'd, projected to `hidden_dim` and given sinusoidal positions; `num_global`
learned global tokens are prepended. In each of `num_layers` pre-norm layers (as in
`token_transformer`), a token attends to the tokens at most `window` positions away on either side
and to every global token; a global token attends to every token and is attended by every token.
Padded caption tokens are masked out as keys. The real tokens' outputs are mean-pooled (global tokens
relay long-range information but are not pooled), then LayerNorm → Linear to `output_dim`.

Cost is linear in T: tokens are cut into blocks of b = min(window, T) positions; a block's queries
attend only to the keys of its own and its two neighbouring blocks (3b keys, masked to the band
|i − j| <= window, which these blocks always contain) plus the G global keys, so attention works on
(B·T/b, heads, b, G + 3b) instead of (B, heads, T, T); the G global queries attend to all G + T keys.
Both run through PyTorch's `scaled_dot_product_attention` with a boolean mask (fused kernels where
the device has them). A padded query also attends to itself, so that no row is empty; padded
outputs are never read. Output (B, output_dim).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.heads import HEADS
from pipeline.heads.token_pair import (
    TokenEmbedding,
    TokenHeadOptions,
    TokenHeadPair,
    check_heads,
    masked_mean,
    output_layer,
)


@dataclass(frozen=True)
class SparseAttentionOptions(TokenHeadOptions):
    window: int = 8  # tokens attended on each side
    num_global: int = 1  # learned global tokens prepended (0 = sliding window only)


def blocks(x: torch.Tensor, size: int, count: int, dim: int) -> torch.Tensor:
    """Overlapping windows of 3·size positions along `dim`, one per block, with zero padding at both ends:
    window i covers blocks i−1, i, i+1. The window axis is appended last (a view, as `Tensor.unfold`)."""
    pad = [0, 0] * (x.dim() - 1 - dim) + [size, size + count * size - x.shape[dim]]
    return F.pad(x, pad).unfold(dim, 3 * size, size)


class SlidingWindowAttention(nn.Module):
    """Multi-head self-attention over (B, G + T, W), the G global tokens first; mask (B, T) or None."""

    def __init__(self, width: int, num_heads: int, window: int, num_global: int, dropout: float):
        super().__init__()
        self.num_heads, self.window, self.num_global, self.dropout = num_heads, window, num_global, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        g, heads = self.num_global, self.num_heads
        q, k, v = self.qkv(x).view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
        real = x.new_ones(batch, length - g, dtype=torch.bool) if mask is None else mask
        key_real = torch.cat([real.new_ones(batch, g), real], dim=1)[:, None, None]  # (B, 1, 1, N)
        glob = F.scaled_dot_product_attention(q[:, :, :g], k, v, attn_mask=key_real, dropout_p=self.drop())
        return self.proj(torch.cat([glob.transpose(1, 2).flatten(2), self.local(q, k, v, real)], dim=1))

    def drop(self) -> float:
        return self.dropout if self.training else 0.0

    def local(self, q, k, v, real) -> torch.Tensor:
        """(B, T, W) outputs of the T local queries: their band of local keys plus the global keys."""
        g, length = self.num_global, real.shape[1]
        size = min(self.window, length)
        count = math.ceil(length / size)
        (batch, heads, _, dim), padded = q.shape, count * size

        def keys(x: torch.Tensor) -> torch.Tensor:  # (B, H, N, d) → (B·n, H, G + 3b, d): global, then local keys
            local = blocks(x[:, :, g:], size, count, dim=2).permute(0, 2, 1, 4, 3)  # (B, n, H, 3b, d)
            glob = x[:, None, :, :g].expand(-1, count, -1, -1, -1)
            return torch.cat([glob, local], dim=3).flatten(0, 1)

        queries = F.pad(q[:, :, g:], (0, 0, 0, padded - length)).view(batch, heads, count, size, dim)
        queries = queries.transpose(1, 2).flatten(0, 1)  # (B·n, H, b, d)
        offset = torch.arange(3 * size, device=q.device) - size - torch.arange(size, device=q.device)[:, None]
        # (b, 3b) band of keys within `window`, real keys only; a padded query keeps itself so no row is empty
        allowed = (offset.abs() <= self.window) & (blocks(real, size, count, dim=1)[:, :, None, :] | (offset == 0))
        allowed = torch.cat([allowed.new_ones(batch, count, size, g), allowed], dim=-1).flatten(0, 1)[:, None]
        out = F.scaled_dot_product_attention(queries, keys(k), keys(v), attn_mask=allowed, dropout_p=self.drop())
        return out.view(batch, count, heads, size, dim).transpose(2, 3).reshape(batch, padded, -1)[:, :length]


class SparseLayer(nn.Module):
    """(B, G + T, W) → same: x + Attn(LN(x)), then x + FFN(LN(x)) (FFN width 4·W, GELU)."""

    def __init__(self, width: int, options: SparseAttentionOptions):
        super().__init__()
        o = options
        self.norm_attention, self.norm_ffn = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = SlidingWindowAttention(width, o.num_heads, o.window, o.num_global, o.dropout)
        self.ffn = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(o.dropout), nn.Linear(4 * width, width)
        )
        self.dropout = nn.Dropout(o.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm_attention(x), mask))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class SparseTransformer(nn.Module):
    """(B, T, D_in) tokens, mask (B, T) or None → (B, output_dim)."""

    def __init__(self, input_dim: int, options: SparseAttentionOptions):
        super().__init__()
        o, width = options, options.hidden_dim
        self.embed = TokenEmbedding(input_dim, width)
        self.global_tokens = nn.Parameter(torch.randn(1, o.num_global, width) * width**-0.5)
        self.layers = nn.ModuleList(SparseLayer(width, o) for _ in range(o.num_layers))
        self.out = output_layer(width, o.output_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.embed(tokens)
        hidden = torch.cat([self.global_tokens.expand(len(tokens), -1, -1).to(hidden.dtype), hidden], dim=1)
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return self.out(masked_mean(hidden[:, self.global_tokens.shape[1] :], mask))


@HEADS.register("sparse_attention")
def sparse_attention_heads(image_dim: int, text_dim: int, options: SparseAttentionOptions) -> TokenHeadPair:
    check_heads(options.hidden_dim, options.num_heads)
    return TokenHeadPair(SparseTransformer(image_dim, options), SparseTransformer(text_dim, options))
