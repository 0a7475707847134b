"""Linear heads: one linear map per modality (the weakest sensible baseline)."""

from dataclasses import dataclass

from torch import nn

from pipeline.heads import HEADS, HeadOptions, HeadPair


@dataclass(frozen=True)
class LinearOptions(HeadOptions):
    output_dim: int = 256


@HEADS.register("linear")
def linear_heads(image_dim: int, text_dim: int, options: LinearOptions) -> HeadPair:
    return HeadPair(nn.Linear(image_dim, options.output_dim), nn.Linear(text_dim, options.output_dim))
