"""`encode_with_tokens` of every backbone family: tokens equal the library's own hidden states, the pooled output is
bit-identical to `encode`, and text masks equal the tokenizer's attention mask."""

import json

import numpy as np
import pytest
import tiny_models
import torch
from PIL import Image

from encoding.backbones import load_image_backbone, load_text_backbone
from encoding.image_batches import DecodedImage, collate

CPU = torch.device("cpu")
TEXTS = ["a red cat sitting on the grass", "the dog", "a small photo of a large blue table on the grass"]


def images():
    """Three random pictures of different aspect ratios (SigLIP 2 gives each its own patch grid)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, size=(30 + 9 * i, 41, 3), dtype=np.uint8)) for i in range(3)]


def pixels_of(backbone, pictures=None):
    return collate([DecodedImage(i, backbone.preprocess(p), "") for i, p in enumerate(pictures or images())]).pixels


def image_tokens(backbone, pixels):
    """(tokens, grid), after checking the pooled output equals `encode` bit for bit."""
    pooled, tokens, grid = backbone.encode_with_tokens(pixels)
    assert torch.equal(pooled, backbone.encode(pixels))
    return tokens, grid


def text_tokens(backbone, texts=TEXTS):
    """(hidden, mask), after checking the pooled output equals `encode` bit for bit."""
    pooled, hidden, mask = backbone.encode_with_tokens(texts)
    assert torch.equal(pooled, backbone.encode(texts)) and mask.dtype == torch.bool
    return hidden, mask


def close(actual, expected):
    torch.testing.assert_close(actual.float(), torch.as_tensor(expected).float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2"])
def test_hf_tokens_are_the_towers_last_hidden_states(tmp_path, family):
    import transformers as tf

    path = tiny_models.hf_model(tmp_path / family, family)
    image_tower, text_tower = load_image_backbone(f"hf:{path}", CPU), load_text_backbone(f"hf:{path}", CPU)
    model = tf.AutoModel.from_pretrained(path).eval()
    processor, tokenizer = tf.AutoImageProcessor.from_pretrained(path), tf.AutoTokenizer.from_pretrained(path)
    inputs = processor(images=images(), return_tensors="pt")
    padding = {"padding": "longest"} if family == "clip" else {"padding": "max_length", "max_length": 16}
    text_inputs = tokenizer(TEXTS, return_tensors="pt", **padding)
    with torch.no_grad():
        vision = model.vision_model(**inputs).last_hidden_state
        text = model.text_model(**text_inputs).last_hidden_state
    tokens, grid = image_tokens(image_tower, pixels_of(image_tower))
    if family == "clip":  # the class token is dropped; 32 px / patch 8 → a 4x4 grid
        close(tokens, vision[:, 1:])
        assert grid == (4, 4)
    elif family == "siglip":
        close(tokens, vision)
        assert grid == (4, 4)
    else:  # each image's own patches, zeros at the padding patches; no fixed grid
        real = inputs["pixel_attention_mask"].bool()
        assert not real.all() and grid is None
        close(tokens, vision * real[..., None])
    hidden, mask = text_tokens(text_tower)
    close(hidden, text)
    assert torch.equal(mask, text_inputs["attention_mask"].bool()) and text_tower.max_tokens == 16


OPEN_CLIP_TOWERS = {
    "vit": {},
    "custom_text": {"custom_text": True},
    "modified_resnet": {"vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16}},
    "timm": {
        "vision_cfg": {"image_size": 32, "timm_model_name": "resnet18", "timm_pool": "avg", "timm_proj": "linear"}
    },
}


def open_clip_dir(tmp_path, tower: str):
    """A local-dir open_clip model: the tiny config with one tower changed."""
    import open_clip

    directory = tmp_path / tower
    directory.mkdir()
    config = {**tiny_models.OPEN_CLIP_CFG, **OPEN_CLIP_TOWERS[tower]}
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{directory}", pretrained=None)
    torch.save(model.state_dict(), directory / "open_clip_pytorch_model.bin")
    return directory, model.eval()


@pytest.mark.parametrize("tower", sorted(OPEN_CLIP_TOWERS))
def test_open_clip_tokens_are_the_towers_own_intermediates(tmp_path, tower):
    import open_clip

    directory, model = open_clip_dir(tmp_path, tower)
    image_tower = load_image_backbone(f"open_clip:{directory}", CPU)
    text_tower = load_text_backbone(f"open_clip:{directory}", CPU)
    pixels = pixels_of(image_tower)
    ids = open_clip.get_tokenizer(f"local-dir:{directory}")(TEXTS)
    tokens, grid = image_tokens(image_tower, pixels)
    with torch.no_grad():
        if tower == "timm":
            expected = model.visual.trunk.forward_features(pixels)  # (B, C, h, w)
        else:  # ViT: after ln_post, without the class token; ModifiedResNet: layer4's map before the attention pool
            expected = model.visual.forward_intermediates(
                pixels, indices=1, normalize_intermediates=True, intermediates_only=True
            )["image_intermediates"][-1]
        text = model.forward_intermediates(
            text=ids, text_indices=1, normalize_intermediates=True, intermediates_only=True
        )["text_intermediates"][-1]
    close(tokens, expected.flatten(2).transpose(1, 2))
    assert grid == tuple(expected.shape[2:])
    hidden, mask = text_tokens(text_tower)
    close(hidden, text)
    assert torch.equal(mask, ids != 0) and text_tower.max_tokens == 16


def test_timm_tokens_are_forward_features_without_prefix_tokens():
    cnn = load_image_backbone("timm:resnet18", CPU, image_size=64)
    pixels = pixels_of(cnn)
    tokens, grid = image_tokens(cnn, pixels)
    with torch.no_grad():
        features = cnn.model.forward_features(pixels)
    close(tokens, features.flatten(2).transpose(1, 2))
    assert grid == (2, 2) and tokens.shape == (3, 4, 512)
    vit = load_image_backbone("timm:vit_tiny_patch16_224", CPU)
    pixels = pixels_of(vit, images()[:1])
    tokens, grid = image_tokens(vit, pixels)
    with torch.no_grad():
        features = vit.model.forward_features(pixels)
    close(tokens, features[:, vit.model.num_prefix_tokens :])
    assert vit.model.num_prefix_tokens == 1 and grid == (14, 14) and tokens.shape == (1, 196, 192)


def test_trained_checkpoint_tokens_are_the_trunk_map_without_register_tokens(tmp_path):
    from encoding.backbones.image_encoder import build_image_encoder

    architecture = {
        "library": "timm",
        "arch": "vit_tiny_patch16_224",
        "image_size": 32,
        "patch_size": 8,
        "options": {"depth": 1, "embed_dim": 32, "num_heads": 2, "reg_tokens": 2},
        "output_dim": 8,
        "hidden_dim": 16,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    torch.manual_seed(0)
    encoder = build_image_encoder(**architecture).eval()
    path = tmp_path / "best.pt"
    torch.save({"format": "xalign-backbone", "architecture": architecture, "encoder": encoder.state_dict()}, path)
    tower = load_image_backbone(str(path), CPU)
    pixels = pixels_of(tower)
    tokens, grid = image_tokens(tower, pixels)
    with torch.no_grad():
        features = encoder.trunk.model.forward_features(pixels)
    assert encoder.trunk.model.num_prefix_tokens == 3  # class + 2 registers
    close(tokens, features[:, 3:])
    assert grid == (4, 4) and tokens.shape == (3, 16, 32)


def test_minilm_tokens_are_sentence_transformers_token_embeddings():
    from sentence_transformers import SentenceTransformer

    from encoding.backbones.sentence_transformers import resolve_local

    tower = load_text_backbone("st:sentence-transformers/all-MiniLM-L6-v2", CPU)
    model = SentenceTransformer(resolve_local("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    hidden, mask = text_tokens(tower)
    expected = model.encode(TEXTS, output_value="token_embeddings")  # each text's own tokens, unpadded
    lengths = model.tokenize(TEXTS)["attention_mask"].sum(dim=1)
    assert mask.sum(dim=1).tolist() == lengths.tolist() == [len(e) for e in expected]
    for row, (own, length) in enumerate(zip(expected, lengths.tolist())):
        close(hidden[row, :length], own)
        assert mask[row, :length].all() and not mask[row, length:].any()
    assert tower.max_tokens == model.max_seq_length == 256 and hidden.shape[-1] == 384


@pytest.mark.parametrize("side", ["right", "left"])
def test_decoder_tokens_are_last_hidden_states_with_the_tokenizers_mask(tmp_path, side):
    import transformers as tf

    path = tiny_models.decoder_model(tmp_path / "decoder", padding_side=side)
    tower = load_text_backbone(f"decoder:{path}", CPU)
    model = tf.AutoModel.from_pretrained(path).eval()
    batch = tower.tokenize(TEXTS)
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
    hidden, mask = text_tokens(tower)
    real = batch["attention_mask"].bool()
    assert torch.equal(mask, real) and not real.all()
    close(hidden[real], expected[real])
    assert tower.max_tokens == 512
