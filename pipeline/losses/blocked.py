"""Large batches: a (B, B) loss computed a block of rows at a time under activation checkpointing.

The contrastive losses hold several (B, B) fp32 matrices (logits, targets, log-probabilities and their
gradients): at B = 32,768 each is 4.3 GB. Every term of these losses is a function of one row of the
similarity matrix (the sigmoid loss's pairs; one direction's softmax over a row), so their sum can be taken
over blocks of `BLOCK_ROWS` rows, each block's matrices recomputed in the backward pass instead of kept:
memory holds a few (BLOCK_ROWS, B) matrices. Batches up to `LARGE_BATCH` keep the one-matrix path.
"""

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

LARGE_BATCH = 8192  # above this, losses are summed over row blocks
BLOCK_ROWS = 2048


def row_ids(image_ids: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """(B,) ids whose equality marks positives: `image_ids`, or each row its own image."""
    return torch.arange(batch, device=device) if image_ids is None else image_ids


def blocked_sum(rows_loss: Callable, rows: torch.Tensor, ids: torch.Tensor, *shared) -> torch.Tensor:
    """Σ over blocks of `rows_loss(rows[a:b], ids[a:b], *shared)` (a scalar sum over those rows), each block
    checkpointed: its intermediates are recomputed in the backward pass instead of stored."""
    total = rows.new_zeros(())
    for a in range(0, len(rows), BLOCK_ROWS):
        block = slice(a, a + BLOCK_ROWS)
        total = total + checkpoint(rows_loss, rows[block], ids[block], *shared, use_reentrant=False)
    return total
