"""Linear heads: one linear map per modality (the weakest sensible baseline)."""

from torch import nn

from pipeline.heads import HEADS, HeadPair


@HEADS.register("linear")
def linear_heads(image_dim: int, text_dim: int, output_dim: int = 256) -> HeadPair:
    return HeadPair(nn.Linear(image_dim, output_dim), nn.Linear(text_dim, output_dim))
