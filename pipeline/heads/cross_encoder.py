"""Cross-encoder heads: caption tokens cross-attend to image tokens and output a match score.

ALBEF's image-text matching (ITM) head (Li et al., 2021, "Align before Fuse"), cross-attention over real
tokens. Two parts:
- a dual encoder for mining and candidate generation: `encode_image(tokens (B, T, D_img), mask=None)`
  and `encode_text(tokens (B, L, D_txt), mask (B, L))` mean-pool the real tokens, then LayerNorm →
  Linear to `output_dim`, L2-normalised (trained by the `itm` loss's contrastive term);
- `match(image_tokens (P, T, D_img), text_tokens (P, L, D_txt), text_mask (P, L))` → (P,) logits,
  one per image-caption pair: both sides are LayerNorm'd and projected to `hidden_dim` with sinusoidal positions
  (image tokens then LayerNorm'd); the caption tokens pass `num_layers` pre-norm fusion layers,
  [masked self-attention → cross-attention to the image tokens → MLP], as ALBEF's fusion encoder;
  the real caption tokens are mean-pooled (masked mean, no CLS token), LayerNorm → Linear → logit.
`rerank_k` is how many dual-encoder candidates per query the head's own evaluation re-scores with
`match`. Pair with the `itm` loss (its `itm_pairs` picks the in-batch hard negatives to match).
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pipeline.heads import HEADS
from pipeline.heads.attention import pre_norm_layer
from pipeline.heads.token_pair import (
    TokenEmbedding,
    TokenHeadOptions,
    TokenHeadPair,
    check_heads,
    masked_mean,
    output_layer,
    padding_mask,
)


@dataclass(frozen=True)
class CrossEncoderOptions(TokenHeadOptions):
    rerank_k: int = 16  # dual-encoder candidates per query re-scored by `match` at evaluation
    required_loss: ClassVar[str | None] = "itm"
    scores_pairs: ClassVar[bool] = True


class MeanPool(nn.Module):
    """(B, T, D_in) tokens, mask (B, T) or None → (B, output_dim): masked mean, LayerNorm, Linear."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.out = output_layer(input_dim, output_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(masked_mean(tokens, mask))


class MatchHead(nn.Module):
    """ALBEF's fusion encoder and ITM score: (P, T, D_img) image tokens, (P, L, D_txt) caption tokens, masks
    (True = real token; None = all real) → (P,) match logits, one per image-caption pair."""

    def __init__(self, image_dim: int, text_dim: int, hidden_dim: int, num_heads: int, num_layers: int, dropout: float):
        super().__init__()
        self.embed_image_tokens = nn.Sequential(TokenEmbedding(image_dim, hidden_dim), nn.LayerNorm(hidden_dim))
        self.embed_text_tokens = TokenEmbedding(text_dim, hidden_dim)
        layer = pre_norm_layer(nn.TransformerDecoderLayer, hidden_dim, num_heads, dropout)
        self.fusion = nn.TransformerDecoder(layer, num_layers)
        self.score = output_layer(hidden_dim, 1)

    def forward(self, image_tokens, text_tokens, text_mask, image_mask=None) -> torch.Tensor:
        fused = self.fusion(
            self.embed_text_tokens(text_tokens),
            self.embed_image_tokens(image_tokens),
            tgt_key_padding_mask=padding_mask(text_mask),
            memory_key_padding_mask=padding_mask(image_mask),
        )
        return self.score(masked_mean(fused, text_mask)).squeeze(-1)


class CrossEncoderPair(TokenHeadPair):
    """A mean-pooling dual encoder plus `match`, the fusion encoder that scores image-caption pairs."""

    def __init__(self, image_dim: int, text_dim: int, options: CrossEncoderOptions):
        o = options
        super().__init__(MeanPool(image_dim, o.output_dim), MeanPool(text_dim, o.output_dim))
        self.rerank_k = o.rerank_k
        self.matcher = MatchHead(image_dim, text_dim, o.hidden_dim, o.num_heads, o.num_layers, o.dropout)

    def match(self, image_tokens, text_tokens, text_mask, image_mask=None) -> torch.Tensor:
        """(P,) match logits of P pairs: image tokens (P, T, D_img), caption tokens (P, L, D_txt), masks as in
        `forward` (True = real token)."""
        return self.matcher(image_tokens, text_tokens, text_mask, image_mask)


@HEADS.register("cross_encoder")
def cross_encoder_heads(image_dim: int, text_dim: int, options: CrossEncoderOptions) -> CrossEncoderPair:
    check_heads(options.hidden_dim, options.num_heads)
    return CrossEncoderPair(image_dim, text_dim, options)
