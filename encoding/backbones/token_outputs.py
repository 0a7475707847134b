"""What the backbones' `encode_with_tokens` share: feature maps and ViT outputs as spatial tokens, text masks.

Image tokens are (B, T, D); when they form a fixed h x w grid, T = h * w in row-major order and the
grid is returned alongside (so `--image-tokens` can average-pool it). ViT class and register
("prefix") tokens are dropped. Text masks are (B, L) bool, True at real (non-padding) tokens.
"""

import contextlib
from collections.abc import Iterator

import torch

Grid = tuple[int, int] | None  # (h, w) of a row-major token grid; None when the tokens form no fixed grid


def feature_map_tokens(features: torch.Tensor, channels_last: bool = False) -> tuple[torch.Tensor, Grid]:
    """(B, C, h, w) feature map ((B, h, w, C) when `channels_last`) → ((B, h*w, C) row-major, (h, w))."""
    if channels_last:
        features = features.permute(0, 3, 1, 2)
    height, width = features.shape[2:]
    return features.flatten(2).transpose(1, 2), (int(height), int(width))


def patch_tokens(tokens: torch.Tensor, num_prefix: int, grid) -> tuple[torch.Tensor, Grid]:
    """(B, P + T, D) ViT output → ((B, T, D) without its P prefix tokens, `grid` when it has T cells, else None)."""
    tokens = tokens[:, num_prefix:]
    grid = None if grid is None else (int(grid[0]), int(grid[1]))
    return tokens, grid if grid is not None and grid[0] * grid[1] == tokens.shape[1] else None


def timm_tokens(model, features: torch.Tensor) -> tuple[torch.Tensor, Grid]:
    """A timm model's `forward_features` output → its spatial tokens (prefix tokens dropped) and grid."""
    if features.ndim == 4:
        return feature_map_tokens(features, channels_last=getattr(model, "output_fmt", "NCHW") == "NHWC")
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return patch_tokens(features, getattr(model, "num_prefix_tokens", 0), grid)


def right_padded_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L) right-padded token ids → (B, L) bool, True up to each row's last non-padding id.

    Counting by position keeps a real token whose id equals the padding id (open_clip pads with 0, which is
    also a vocabulary entry) when a real token follows it.
    """
    positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
    lengths = ((ids != pad_id) * positions).amax(dim=1, keepdim=True)
    return positions <= lengths


@contextlib.contextmanager
def flag_set(module, name: str, value) -> Iterator[None]:
    """Set `module.<name>` for the block (e.g. open_clip's `output_tokens`), then restore it."""
    previous = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, previous)


@contextlib.contextmanager
def captured(module: torch.nn.Module, what: str = "output") -> Iterator[list]:
    """Collect the first input ('input') or the output ('output') of every call of `module` in the block."""
    seen: list = []
    if what == "input":
        handle = module.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    else:
        handle = module.register_forward_hook(lambda _module, _args, output: seen.append(output))
    try:
        yield seen
    finally:
        handle.remove()
