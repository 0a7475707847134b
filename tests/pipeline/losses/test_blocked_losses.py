"""Above `LARGE_BATCH` the (B, B) losses are summed a block of rows at a time: the same loss and gradients as the
one-matrix path (repeated image ids, hard negatives, label smoothing, learnable scale and bias)."""

import pytest
import torch
import torch.nn.functional as F

from pipeline import losses
from pipeline.losses import blocked


def features(batch: int, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=g), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(batch, dim, generator=g), dim=-1).requires_grad_()
    return image, text


def loss_and_grads(loss, image, text, ids):
    value = loss(image, text, ids)
    params = [image, text, *[p for p in loss.parameters() if p.requires_grad]]
    return value.detach(), torch.autograd.grad(value, params)


@pytest.mark.parametrize(
    "name, options",
    [
        ("clip", {}),
        ("clip", {"hard_negative_beta": 0.5}),
        ("align", {"label_smoothing": 0.1}),
        ("siglip", {"bias": -2.0}),
        ("siglip", {"hard_negative_beta": 0.5}),
    ],
)
@pytest.mark.parametrize("repeated_ids", [False, True])
def test_blocked_rows_give_the_one_matrix_loss_and_gradients(name, options, repeated_ids, monkeypatch):
    batch = 37  # blocks of 8 rows, the last one short
    image, text = features(batch)
    ids = torch.arange(batch) // 3 if repeated_ids else None
    loss = losses.build(name, **options)
    whole, whole_grads = loss_and_grads(loss, image, text, ids)
    monkeypatch.setattr(blocked, "LARGE_BATCH", 16)
    monkeypatch.setattr(blocked, "BLOCK_ROWS", 8)
    for module in ("clip", "siglip"):
        monkeypatch.setattr(f"pipeline.losses.{module}.LARGE_BATCH", 16)
    blocks, block_grads = loss_and_grads(loss, image, text, ids)
    torch.testing.assert_close(blocks, whole, rtol=1e-5, atol=1e-6)
    for got, want in zip(block_grads, whole_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
