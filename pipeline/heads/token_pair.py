"""Token heads: head pairs over an item's cached tokens instead of its one pooled vector.

A token cache (DESIGN "Token caches and attention over tokens") holds image tokens (N, T, D_img_tok),
every image with the same T (no padding), and caption tokens (M, L, D_txt_tok) with a bool mask
(M, L), True for a real token (at least one per caption; padding after the real tokens); padded
positions never influence an output. A token head's builder takes the TOKEN dims,
`builder(image_tok_dim, text_tok_dim, options)`, and returns a `TokenHeadPair`. Every item is
embedded on its own: tokens attend only within their item.

Positions: after the input projection to `hidden_dim`, fixed sinusoidal 1-D positions (Vaswani et
al., 2017: sin on even, cos on odd channels, wavelengths 2π … 10000·2π) are added to the tokens.
They have no parameters and no length limit; extra padding does not move any real token's position.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoding.errors import BadInput
from pipeline.heads import HeadOptions, HeadPair


@dataclass(frozen=True)
class TokenHeadOptions(HeadOptions):
    """Keys every token head has; `hidden_dim` is the width of the tokens inside the head."""

    output_dim: int = 256
    hidden_dim: int = 256
    num_heads: int = 4
    num_layers: int = 2
    dropout: float = 0.1


def takes_tokens(options: HeadOptions) -> bool:
    """Whether the head these options describe reads token batches (else pooled (B, D) vectors)."""
    return isinstance(options, TokenHeadOptions)


def check_heads(hidden_dim: int, num_heads: int) -> None:
    """BadInput unless `hidden_dim` splits into `num_heads` attention heads."""
    if hidden_dim % num_heads:
        raise BadInput(f"model.hidden_dim {hidden_dim} must divide by model.num_heads {num_heads}")


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """(length, dim) fixed sinusoidal position codes (no parameters, any length)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    angles = position * frequency
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(angles)
    codes[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return codes


class TokenEmbedding(nn.Module):
    """(B, T, D_in) → (B, T, W): LayerNorm, a linear projection to width W, plus sinusoidal positions.

    The LayerNorm puts every backbone's tokens on one scale before the positions are added: cached
    tokens come at any scale (a random-init CNN's cells have norms near 3 over 512 channels), and
    positions of unit amplitude would otherwise drown them, so every item starts out looking alike.
    """

    def __init__(self, input_dim: int, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(input_dim)
        self.project = nn.Linear(input_dim, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.project(self.norm(tokens))
        return hidden + sinusoidal_positions(hidden.shape[1], hidden.shape[2], hidden.device).to(hidden.dtype)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, W) → (B, W): the mean over the real tokens (mask (B, T), True = real; None = all real)."""
    if mask is None:
        return tokens.mean(dim=1)
    summed = tokens.masked_fill(~mask[..., None], 0.0).sum(dim=1)
    return summed / mask.sum(dim=1, keepdim=True).clamp(min=1).to(summed.dtype)


def padding_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """PyTorch's key padding mask (True = ignore) from a token mask (True = real)."""
    return None if mask is None else ~mask


def output_layer(width: int, output_dim: int) -> nn.Module:
    """(B, W) → (B, output_dim): LayerNorm then Linear."""
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, output_dim))


class TokenHeadPair(HeadPair):
    """Two token encoders `head(tokens, mask) -> (B, output_dim)`; the encodings are L2-normalised.

    `encode_image(tokens (B, T, D_img_tok), mask=None)` and `encode_text(tokens (B, L, D_txt_tok),
    mask (B, L))` give (B, output_dim); a mask of None means every token is real.
    """

    def encode_image(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.image_head(tokens, mask), dim=-1)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.text_head(tokens, mask), dim=-1)

    def forward(self, image_tokens, image_mask, text_tokens, text_mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(image_tokens, image_mask), self.encode_text(text_tokens, text_mask)

    @torch.no_grad()
    def embed(self, image, text, batch_size: int, image_mask=None, text_mask=None):
        """(N, D) image and (M, D) caption embeddings of (N, T, ·) and (M, L, ·) tokens (tensors, arrays or
        HDF5 datasets: read `batch_size` items at a time), in fp32 and eval mode, masks as in `forward`."""
        self.eval()
        device = next(self.parameters()).device

        def rows(x, i: int) -> torch.Tensor | None:
            return None if x is None else torch.as_tensor(x[i : i + batch_size]).to(device)

        def run(encode, tokens, mask) -> torch.Tensor:
            steps = range(0, len(tokens), batch_size)
            parts = [encode(rows(tokens, i).float(), rows(mask, i)) for i in steps]
            return torch.cat(parts) if parts else torch.zeros(0, 0, device=device)

        return run(self.encode_image, image, image_mask), run(self.encode_text, text, text_mask)
