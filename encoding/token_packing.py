"""The writing side of `xalign encode --tokens [--image-tokens N]`: token shapes, pooling and padding.

Image tokens are stored as the backbone gives them ((B, T, D), spatial grid only) or average-pooled
to N = s*s tokens (`F.adaptive_avg_pool2d` of the h x w grid to s x s). Caption tokens are packed
real tokens first (whatever side the tokenizer padded), zeros at padding, and padded per shard to
the shard's longest caption. Both are stored as float16.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate

from encoding.backbones.token_outputs import Grid
from encoding.errors import BadInput

STORED = torch.float16


def check_image_tokens(count: int | None, tokens: bool) -> None:
    """`--image-tokens N` before any model loads: only with `--tokens`, a perfect square >= 1."""
    if count is None:
        return
    if not tokens:
        raise BadInput(f"--image-tokens {count}: only with --tokens")
    if count < 1 or math.isqrt(count) ** 2 != count:
        raise BadInput(f"--image-tokens {count}: expected a perfect square s*s (1, 4, 9, 16, ...) to pool the grid to")


@dataclass(frozen=True)
class ImageTokens:
    """The image tokens a token cache stores: `num_tokens` of `token_dim` per image.

    `pool_to` is `--image-tokens N` (the grid is pooled to sqrt(N) x sqrt(N)); None keeps the backbone's own.
    """

    num_tokens: int
    token_dim: int
    pool_to: int | None
    grid: Grid  # (h, w) of the stored tokens; None when they form no fixed grid

    def store(self, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
        """(B, T, D) backbone tokens on their `grid` → (B, num_tokens, D) float16 on the CPU."""
        if self.pool_to is not None and self.pool_to != tokens.shape[1]:
            side = math.isqrt(self.pool_to)
            maps = tokens.float().unflatten(1, grid).permute(0, 3, 1, 2)  # (B, D, h, w)
            tokens = F.adaptive_avg_pool2d(maps, side).flatten(2).transpose(1, 2)
        return tokens.to(STORED).cpu()

    def empty(self) -> torch.Tensor:
        return torch.zeros(0, self.num_tokens, self.token_dim, dtype=STORED)


def image_tokens_for(image_model, pool_to: int | None) -> ImageTokens:
    """Measure the backbone's tokens with one blank image through its own preprocessing, and check `pool_to`.

    A grid smaller than sqrt(N) x sqrt(N), or N on tokens with no fixed grid (unless N is their count), is BadInput.
    """
    pixels = default_collate([image_model.preprocess(Image.new("RGB", (224, 224)))])
    _, tokens, grid = image_model.encode_with_tokens(pixels)
    count, dim = tokens.shape[1], tokens.shape[2]
    if pool_to is None or pool_to == count:
        return ImageTokens(count, dim, pool_to, grid)
    if grid is None:
        raise BadInput(
            f"--image-tokens {pool_to}: {image_model.spec} gives {count} tokens with no fixed grid to pool; "
            f"omit --image-tokens or pass {count}"
        )
    side = math.isqrt(pool_to)
    if side > min(grid):
        raise BadInput(
            f"--image-tokens {pool_to}: larger than {image_model.spec}'s {grid[0]}x{grid[1]} token grid; "
            f"expected at most {min(grid) ** 2}"
        )
    return ImageTokens(pool_to, dim, pool_to, (side, side))


@dataclass(frozen=True)
class TokenLayout:
    """What a token cache stores per image and per caption; its entries go into metadata.json."""

    image: ImageTokens
    text_dim: int  # D' of the caption tokens
    max_tokens: int  # the tokenizer's limit: a shard's caption length L is at most this

    def image_entry(self) -> dict:
        grid = None if self.image.grid is None else list(self.image.grid)
        return {"num_tokens": self.image.num_tokens, "token_dim": self.image.token_dim, "token_grid": grid}

    def text_entry(self) -> dict:
        return {"token_dim": self.text_dim, "max_tokens": self.max_tokens}


def token_layout(image_model, text_model, pool_to: int | None) -> TokenLayout:
    """Measure both backbones' tokens (one forward each on a blank image and an empty caption)."""
    text_dim = int(text_model.encode_with_tokens([""])[1].shape[-1])
    return TokenLayout(image_tokens_for(image_model, pool_to), text_dim, text_model.max_tokens)


def real_tokens_first(hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, D') states and (B, L) mask → each row's real tokens first, in order, zeros after, cut to the
    longest row: ((B, L', D') float16 on the CPU, (B, L') bool)."""
    mask = mask.bool()
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    mask = mask.gather(1, order)
    hidden = hidden.gather(1, order[..., None].expand_as(hidden)).masked_fill(~mask[..., None], 0)
    length = int(mask.sum(dim=1).max()) if len(mask) else 0
    return hidden[:, :length].to(STORED).cpu(), mask[:, :length].cpu()


def pad_and_stack(parts: list[tuple[torch.Tensor, torch.Tensor]], token_dim: int):
    """Batches of (states (b, L_b, D'), mask (b, L_b)) → ((m, L, D') float16, (m, L) bool), L the longest L_b."""
    if not parts:
        return torch.zeros(0, 0, token_dim, dtype=STORED), torch.zeros(0, 0, dtype=torch.bool)
    length = max(states.shape[1] for states, _ in parts)
    states = torch.cat([F.pad(states, (0, 0, 0, length - states.shape[1])) for states, _ in parts])
    return states, torch.cat([F.pad(mask, (0, length - mask.shape[1])) for _, mask in parts])
