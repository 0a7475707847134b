"""Heads: every registered pair maps cache dims to L2-normalised output_dim, trains, and validates its options."""

import pytest
import torch
from torch import nn

from encoding.errors import BadInput
from pipeline import heads
from pipeline.config import schema
from pipeline.heads.mlp import ResidualBlock

OPTIONS = {"output_dim": 16, "hidden_dim": 32, "num_heads": 2, "num_layers": 2, "num_tokens": 4, "dropout": 0.0}
ALL = ["align", "attention", "blip", "clip", "cross_modal", "linear", "mlp", "siglip"]  # pooled (B, D) inputs
TOKEN_HEADS = ["attention_pool", "cross_encoder", "sparse_attention", "token_transformer"]  # test_token_heads.py


def test_registry_lists_every_head():
    assert heads.HEADS.names() == sorted(ALL + TOKEN_HEADS)
    pooled = [name for name in heads.HEADS.names() if not heads.takes_tokens(heads.options_for(name, {}))]
    assert pooled == ALL  # every other head reads token batches and is tested in test_token_heads.py
    with pytest.raises(BadInput, match=r"model.type: unknown head 'nope'; choose one of: align, attention"):
        heads.build("nope", 3, 4)


@pytest.mark.parametrize("name", ALL)
def test_head_shapes_normalisation_and_gradients(name):
    torch.manual_seed(0)
    options = {k: v for k, v in OPTIONS.items() if k in schema.option_names(heads.HEADS.get(name))}
    pair = heads.build(name, 12, 10, **options)
    image, text = pair(torch.randn(6, 12), torch.randn(6, 10))
    assert image.shape == (6, 16) and text.shape == (6, 16)
    assert torch.allclose(image.norm(dim=-1), torch.ones(6), atol=1e-5)
    (image * text).sum().backward()
    grads = [p.grad for p in pair.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    pair.eval()  # items are embedded independently: one row's output does not depend on the others
    single = pair.encode_image(torch.randn(1, 12).expand(3, 12).clone())
    assert torch.allclose(single[0], single[2], atol=1e-6)


def test_mlp_depth_and_residual_blocks():
    plain = heads.build("mlp", 8, 8, output_dim=4, hidden_dim=16, num_layers=3)
    assert sum(isinstance(m, nn.Linear) for m in plain.image_head) == 4
    residual = heads.build("mlp", 8, 8, output_dim=4, hidden_dim=16, num_layers=3, residual=True)
    blocks = [m for m in residual.image_head if isinstance(m, ResidualBlock)]
    assert len(blocks) == 3
    block = blocks[0]
    nn.init.zeros_(block.body[3].weight), nn.init.zeros_(block.body[3].bias)
    x = torch.randn(2, 16)
    assert torch.equal(block(x), x)  # a zeroed residual branch is the identity


def test_align_uses_batchnorm_or_layernorm():
    assert any(isinstance(m, nn.BatchNorm1d) for m in heads.build("align", 8, 8).modules())
    no_bn = heads.build("align", 8, 8, use_bn=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in no_bn.modules())
    assert heads.build("align", 8, 8).image_head[0].out_features == 2048  # the larger default hidden width


def test_cross_modal_bank_is_shared_between_modalities():
    pair = heads.build("cross_modal", 12, 10, **OPTIONS)
    image_layer, text_layer = pair.image_head.layers[0], pair.text_head.layers[0]
    assert image_layer.bank is text_layer.bank and image_layer.attention is text_layer.attention
    assert image_layer.norm_query is not text_layer.norm_query


def test_token_split_is_validated():
    with pytest.raises(BadInput, match=r"model.hidden_dim 30 must split into model.num_tokens 4 tokens"):
        heads.build("attention", 8, 8, hidden_dim=30, num_tokens=4, num_heads=2)
    with pytest.raises(BadInput, match=r"divides by model.num_heads 3"):
        heads.build("cross_modal", 8, 8, hidden_dim=32, num_tokens=4, num_heads=3)


def test_blip_momentum_copies_follow_an_ema():
    torch.manual_seed(0)
    pair = heads.build("blip", 6, 5, output_dim=4, hidden_dim=8, momentum=0.9, dropout=0.0)
    frozen = [p for p in pair.parameters() if not p.requires_grad]
    assert frozen and sum(p.numel() for p in frozen) == sum(p.numel() for p in pair.parameters() if p.requires_grad)
    before = [p.clone() for p in pair.momentum_image_head.parameters()]
    with torch.no_grad():
        for p in pair.image_head.parameters():
            p.add_(1.0)
    image_m, text_m = pair.momentum_features(torch.randn(3, 6), torch.randn(3, 5))
    for old, online, ema in zip(before, pair.image_head.parameters(), pair.momentum_image_head.parameters()):
        assert torch.allclose(ema, 0.9 * old + 0.1 * online)
    assert not image_m.requires_grad and image_m.shape == (3, 4) and text_m.shape == (3, 4)
    assert heads.build("mlp", 6, 5).momentum_features(torch.randn(3, 6), torch.randn(3, 5)) is None
