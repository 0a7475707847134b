"""Token heads: built by name on token dims, normalised outputs, padding and batch independence, training,
gradients, options; the cross-encoder's match scores."""

import numpy as np
import pytest
import torch

from encoding.errors import BadInput
from pipeline import heads, losses
from pipeline.config.experiment import from_dict, schema
from pipeline.heads.token_pair import sinusoidal_positions
from pipeline.losses.itm import itm_pairs

TOKEN_HEADS = ["attention_pool", "cross_encoder", "sparse_attention", "token_transformer"]
OPTIONS = {
    "output_dim": 16,
    "hidden_dim": 32,
    "num_heads": 2,
    "num_layers": 2,
    "dropout": 0.0,
    "num_queries": 2,
    "window": 2,
    "num_global": 1,
}
IMAGE_DIM, TEXT_DIM = 12, 10


def build(name, **overrides):
    taken = schema.option_names(heads.HEADS.get(name))
    return heads.build(name, IMAGE_DIM, TEXT_DIM, **{k: v for k, v in {**OPTIONS, **overrides}.items() if k in taken})


def captions(lengths, width=None, seed=0):
    """(B, L, TEXT_DIM) tokens with garbage in the padded positions, and the (B, L) mask."""
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), width, TEXT_DIM, generator=g) * 5, mask


def image_tokens(batch, tokens=6, seed=1):
    return torch.randn(batch, tokens, IMAGE_DIM, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_builds_by_name_with_normalised_outputs_of_the_right_shape(name):
    torch.manual_seed(0)
    pair = build(name)
    assert heads.takes_tokens(heads.options_for(name, {})) and isinstance(pair, heads.TokenHeadPair)
    text, mask = captions([3, 7, 1])
    image_features, text_features = pair(image_tokens(3), None, text, mask)
    assert image_features.shape == (3, 16) and text_features.shape == (3, 16)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text_features.norm(dim=-1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_padding_does_not_change_the_output(name):
    torch.manual_seed(0)
    pair = build(name).eval()
    text, mask = captions([4, 2, 6])
    padded, padded_mask = captions([4, 2, 6], width=11, seed=5)
    padded[:, :6][mask] = text[mask]  # same real tokens, other garbage, five more padded positions
    assert torch.allclose(pair.encode_text(text, mask), pair.encode_text(padded, padded_mask), atol=1e-5)


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_items_do_not_influence_each_other(name):
    torch.manual_seed(0)
    pair = build(name).eval()
    text, mask = captions([5, 3, 1, 4])
    together = pair.encode_text(text, mask)
    alone = torch.cat([pair.encode_text(text[i : i + 1, :n], None) for i, n in enumerate([5, 3, 1, 4])])
    assert torch.allclose(together, alone, atol=1e-5)
    images = image_tokens(4)
    alone = torch.cat([pair.encode_image(images[i : i + 1]) for i in range(4)])
    assert torch.allclose(pair.encode_image(images), alone, atol=1e-5)


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    pair = build(name)
    text, mask = captions([3, 5])
    image_features, text_features = pair(image_tokens(2), None, text, mask)
    loss = (image_features * text_features).sum()
    if name == "cross_encoder":
        loss = loss + pair.match(image_tokens(2), text, mask).sum()
    loss.backward()
    missing = [n for n, p in pair.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def paired_tokens(batch, seed):
    """Image tokens and caption tokens that both carry a per-item latent (a learnable matching task)."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, 1, 4, generator=g)
    image = latent @ torch.randn(4, IMAGE_DIM, generator=g) + 0.1 * torch.randn(batch, 6, IMAGE_DIM, generator=g)
    text = latent @ torch.randn(4, TEXT_DIM, generator=g) + 0.1 * torch.randn(batch, 5, TEXT_DIM, generator=g)
    return image, text, torch.arange(5)[None, :] < torch.randint(2, 6, (batch, 1), generator=g)


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_a_few_steps_reduce_the_contrastive_loss(name):
    torch.manual_seed(0)
    pair, loss_fn = build(name), losses.build("itm" if name == "cross_encoder" else "clip")
    optimizer = torch.optim.Adam([*pair.parameters(), *loss_fn.parameters()], lr=3e-3)
    image, text, mask = paired_tokens(8, seed=3)
    values = []
    for step in range(15):
        features = pair(image, None, text, mask)
        extra = {}
        if name == "cross_encoder":
            rows, cols, labels = itm_pairs(features[0] @ features[1].T, None, torch.Generator().manual_seed(step))
            extra = {"match_logits": pair.match(image[rows], text[cols], mask[cols]), "match_labels": labels}
        loss = loss_fn(*features, **extra)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.7 * values[0]


def test_match_scores_pairs_independently_of_padding_and_batch():
    torch.manual_seed(0)
    pair = build("cross_encoder").eval()
    assert pair.rerank_k == 16 and build("cross_encoder", rerank_k=4).rerank_k == 4
    text, mask = captions([4, 2, 6])
    images = image_tokens(3)
    scores = pair.match(images, text, mask)
    assert scores.shape == (3,)
    padded, padded_mask = captions([4, 2, 6], width=9, seed=7)
    padded[:, :6][mask] = text[mask]
    assert torch.allclose(scores, pair.match(images, padded, padded_mask), atol=1e-5)
    alone = torch.cat([pair.match(images[i : i + 1], text[i : i + 1], mask[i : i + 1]) for i in range(3)])
    assert torch.allclose(scores, alone, atol=1e-5)
    assert not torch.allclose(scores, pair.match(images.flip(0), text, mask))  # the image matters


def test_embed_reads_arrays_in_batches_like_encode():
    torch.manual_seed(0)
    pair = build("token_transformer").eval()
    text, mask = captions([3, 5, 2, 4, 1])
    images = image_tokens(5)
    image_emb, text_emb = pair.embed(images.numpy().astype(np.float16), text.numpy(), 2, text_mask=mask.numpy())
    assert torch.allclose(text_emb, pair.encode_text(text, mask), atol=1e-5)
    assert torch.allclose(image_emb, pair.encode_image(images.half().float()), atol=1e-5)


def test_positions_are_fixed_sinusoids_and_order_matters():
    codes = sinusoidal_positions(50, 7)
    assert codes.shape == (50, 7) and torch.equal(codes[0, 0::2], torch.zeros(4))
    assert torch.equal(codes[0, 1::2], torch.ones(3)) and codes[3, 0].item() == pytest.approx(np.sin(3.0))
    torch.manual_seed(0)
    pair = build("token_transformer").eval()
    images = image_tokens(1)
    assert not torch.allclose(pair.encode_image(images), pair.encode_image(images.flip(1)), atol=1e-4)
    assert not any("position" in n for n, _ in pair.named_parameters())


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("attention_pool", "window"),
        ("token_transformer", "num_queries"),
        ("sparse_attention", "rerank_k"),
        ("cross_encoder", "num_global"),
        ("token_transformer", "num_tokens"),
    ],
)
def test_a_key_the_token_head_does_not_take_is_refused(name, key):
    with pytest.raises(BadInput, match=rf"config key 'model.{key}': head '{name}' does not take it; its keys: type"):
        heads.build(name, 4, 4, **{key: 2})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"type": "sparse_attention", "window": 0}, r"'model.window': expected a finite number >= 1"),
        ({"type": "sparse_attention", "num_global": -1}, r"'model.num_global': expected a finite number >= 0"),
        ({"type": "attention_pool", "num_queries": 0}, r"'model.num_queries': expected a finite number >= 1"),
        ({"type": "cross_encoder", "rerank_k": 0}, r"'model.rerank_k': expected a finite number >= 1"),
    ],
)
def test_token_options_are_range_checked(options, expected):
    with pytest.raises(BadInput, match=expected):
        from_dict({"model": options})


def test_defaults_and_head_split_check():
    o = {name: heads.options_for(name, {}) for name in TOKEN_HEADS}
    transformer = o["token_transformer"]
    assert (transformer.output_dim, transformer.hidden_dim, transformer.num_heads) == (256, 256, 4)
    assert (transformer.num_layers, transformer.dropout) == (2, 0.1)
    assert (o["attention_pool"].num_queries, o["attention_pool"].num_layers) == (1, 1)
    assert (o["sparse_attention"].window, o["sparse_attention"].num_global) == (8, 1)
    assert o["cross_encoder"].rerank_k == 16
    with pytest.raises(BadInput, match=r"model.hidden_dim 30 must divide by model.num_heads 4"):
        heads.build("sparse_attention", 4, 4, hidden_dim=30)
