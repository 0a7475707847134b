"""SigLIP-style heads (Zhai et al., 2023): the towers' output blocks, applied to cached vectors.

Image side: the MLP block of SigLIP's attention-pooling (MAP) head, x + MLP(LN(x)) with an MLP of
width `hidden_dim`, then LayerNorm → Linear to `output_dim`. Text side: SigLIP's final LayerNorm →
Linear projection. No dropout (SigLIP uses none). Pair with the `siglip` loss.
Input (B, D_in) → output (B, output_dim).
"""

from dataclasses import dataclass

from torch import nn

from pipeline.heads import HEADS, HeadOptions, HeadPair


@dataclass(frozen=True)
class SiglipHeadOptions(HeadOptions):
    output_dim: int = 256
    hidden_dim: int = 512


class MapMlpBlock(nn.Module):
    """(B, D) → (B, D): x + Linear(GELU(Linear(LayerNorm(x))))."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))

    def forward(self, x):
        return x + self.mlp(x)


@HEADS.register("siglip")
def siglip_heads(image_dim: int, text_dim: int, options: SiglipHeadOptions) -> HeadPair:
    output_dim = options.output_dim
    image = nn.Sequential(
        MapMlpBlock(image_dim, options.hidden_dim), nn.LayerNorm(image_dim), nn.Linear(image_dim, output_dim)
    )
    text = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, output_dim))
    return HeadPair(image, text)
