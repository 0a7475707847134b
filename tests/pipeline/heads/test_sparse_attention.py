"""Sparse attention: the blocked sliding-window + global computation equals a naive dense (T, T) banded+global
mask with the same weights, and its work and saved activations grow linearly in the token count."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pipeline import heads
from pipeline.heads.sparse_attention import SlidingWindowAttention


def dense_reference(module: SlidingWindowAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The same attention through an explicit (G+T, G+T) boolean mask: |i − j| <= window, or i or j global,
    and key j real."""
    batch, length, width = x.shape
    g, heads_, window = module.num_global, module.num_heads, module.window
    q, k, v = module.qkv(x).view(batch, length, 3, heads_, width // heads_).permute(2, 0, 3, 1, 4)
    position = torch.arange(length)
    is_global = position < g
    allowed = ((position[:, None] - position[None, :]).abs() <= window) | is_global[:, None] | is_global[None, :]
    real = torch.ones(batch, length - g, dtype=torch.bool) if mask is None else mask
    allowed = allowed & torch.cat([torch.ones(batch, g, dtype=torch.bool), real], dim=1)[:, None, None, :]
    scores = (q @ k.transpose(-1, -2)) / (width // heads_) ** 0.5
    out = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(dim=-1) @ v
    return module.proj(out.transpose(1, 2).reshape(batch, length, width))


def sparse_module(window, num_global, width=16, num_heads=2, seed=0):
    torch.manual_seed(seed)
    return SlidingWindowAttention(width, num_heads, window, num_global, dropout=0.0).eval()


@pytest.mark.parametrize(
    ("tokens", "window", "num_global"),
    [(12, 3, 1), (13, 4, 1), (7, 2, 0), (10, 1, 2), (5, 8, 1), (1, 3, 1), (17, 5, 3)],
)
@pytest.mark.parametrize("padded", [False, True])
def test_blocked_attention_equals_the_dense_banded_reference(tokens, window, num_global, padded):
    module = sparse_module(window, num_global)
    g = torch.Generator().manual_seed(tokens)
    x = torch.randn(3, num_global + tokens, 16, generator=g)
    mask = None
    if padded:
        lengths = torch.tensor([tokens, max(1, tokens // 2), max(1, tokens - 3)])
        mask = torch.arange(tokens)[None, :] < lengths[:, None]
    ours, reference = module(x, mask), dense_reference(module, x, mask)
    rows = torch.cat([torch.ones(3, num_global, dtype=torch.bool), mask if padded else torch.ones(3, tokens).bool()], 1)
    assert torch.allclose(ours[rows], reference[rows], atol=1e-5)
    assert torch.isfinite(ours).all()


@pytest.mark.parametrize("num_global", [0, 2])
def test_whole_head_equals_the_head_on_dense_attention(num_global, monkeypatch):
    torch.manual_seed(0)
    options = dict(output_dim=8, hidden_dim=16, num_heads=2, num_layers=2, dropout=0.0, window=3)
    pair = heads.build("sparse_attention", 6, 5, num_global=num_global, **options).eval()
    text = torch.randn(4, 11, 5)
    mask = torch.arange(11)[None, :] < torch.tensor([11, 4, 7, 1])[:, None]
    images = torch.randn(2, 9, 6)
    ours = pair.encode_text(text, mask), pair.encode_image(images)
    monkeypatch.setattr(SlidingWindowAttention, "forward", dense_reference)
    reference = pair.encode_text(text, mask), pair.encode_image(images)
    assert torch.allclose(ours[0], reference[0], atol=1e-5) and torch.allclose(ours[1], reference[1], atol=1e-5)


def flops_and_saved(module, tokens: int) -> tuple[int, int]:
    """FLOPs of one forward pass and the elements it saves for the backward pass, on PyTorch's unfused
    attention (explicit score matrices, which the FLOP counter sees and autograd saves)."""
    x = torch.randn(1, module.num_global + tokens, 16, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, hooks:
        module(x)
    return counter.get_total_flops(), sum(saved)


def test_work_and_saved_activations_are_linear_in_the_token_count():
    sparse = sparse_module(window=8, num_global=1).train()
    flops_1k, saved_1k = flops_and_saved(sparse, 1024)
    flops_4k, saved_4k = flops_and_saved(sparse, 4096)
    assert flops_4k / flops_1k == pytest.approx(4, rel=0.05) and saved_4k / saved_1k == pytest.approx(4, rel=0.05)
    dense = sparse_module(window=4096, num_global=1)  # one block: every token sees every token
    assert flops_and_saved(dense, 1024)[0] / flops_1k > 10
