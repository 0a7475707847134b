"""Locked towers: `model.trainable` and `model.text.trainable` (`all`, `none`, `last_N`).

`none` locks the whole tower (LiT's locked image tower, Zhai et al., 2022); `last_N` locks its input
embeddings and every block but the last N, so the last N blocks and what follows them (final norms,
projections) train. The projection into the shared space always trains. Locked modules stay in eval mode
while training (no dropout, BatchNorm statistics fixed), so a locked tower gives the same features as
at the start.
"""

from collections.abc import Sequence
from itertools import takewhile

from torch import nn

from encoding.errors import BadInput


def trunk_blocks(trunk: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """(blocks, input parameters) of an image trunk: a timm ViT's `blocks` or a CNN's stages, and the
    parameters registered before the first block (patch/stem embeddings, class token, positions)."""
    model = getattr(trunk, "model", None) or trunk.features
    if hasattr(model, "blocks") or hasattr(model, "stages"):  # timm ViTs; ConvNeXt-style CNNs
        blocks = list(getattr(model, "blocks", None) or model.stages)
    else:  # ResNet-style: the layerN stages
        blocks = [m for m in model.children() if isinstance(m, nn.Sequential)]
    first = {id(p) for p in blocks[0].parameters()} if blocks else set()
    return blocks, list(takewhile(lambda p: id(p) not in first, model.parameters()))


def lock(
    tower: nn.Module, blocks: Sequence[nn.Module], inputs: Sequence[nn.Parameter], layers: int | None, key: str
) -> list[nn.Module]:
    """Freeze `tower` as `layers` says (None: nothing; 0: all of it; N: `inputs` and all `blocks` but the last
    N); the modules to keep in eval mode. BadInput naming `key` when N is more than the tower's blocks."""
    if layers is None:
        return []
    if layers == 0:
        tower.requires_grad_(False)
        return [tower]
    if layers > len(blocks):
        raise BadInput(f"config key '{key}': last_{layers} is more than the tower's {len(blocks)} blocks")
    frozen = list(blocks[: len(blocks) - layers])
    for module in frozen:
        module.requires_grad_(False)
    for parameter in inputs:
        parameter.requires_grad_(False)
    return frozen
