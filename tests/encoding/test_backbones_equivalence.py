"""Each backbone's embedding equals what its library's own call returns for the same input."""

import json

import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F
from PIL import Image

from encoding.backbones import load_image_backbone, load_text_backbone
from encoding.errors import BadInput
from encoding.image_batches import DecodedImage, collate

CPU = torch.device("cpu")
TEXTS = ["a red cat sitting on the grass", "the dog", "a small photo of a large blue table on the grass"]


def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, size=(30 + 7 * i, 41, 3), dtype=np.uint8)) for i in range(3)]


def image_embeddings(backbone, pictures) -> torch.Tensor:
    """Through the encoder's own path: preprocess per image, collate, encode, L2-normalise."""
    batch = collate([DecodedImage(i, backbone.preprocess(p), "") for i, p in enumerate(pictures)])
    return F.normalize(backbone.encode(batch.pixels), dim=-1)


def close(a, b):
    torch.testing.assert_close(F.normalize(torch.as_tensor(a).float(), dim=-1), b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2"])
def test_hf_towers_match_the_models_own_forward(tmp_path, family):
    import transformers as tf

    path = tiny_models.hf_model(tmp_path / family, family)
    image_tower, text_tower = load_image_backbone(f"hf:{path}", CPU), load_text_backbone(f"hf:{path}", CPU)
    model = tf.AutoModel.from_pretrained(path).eval()
    processor, tokenizer = tf.AutoImageProcessor.from_pretrained(path), tf.AutoTokenizer.from_pretrained(path)
    padding = {"padding": "longest"} if family == "clip" else {"padding": "max_length", "max_length": 16}
    with torch.no_grad():
        out = model(
            **processor(images=images(), return_tensors="pt"), **tokenizer(TEXTS, return_tensors="pt", **padding)
        )
    close(out.image_embeds, image_embeddings(image_tower, images()))
    close(out.text_embeds, F.normalize(text_tower.encode(TEXTS), dim=-1))
    assert image_tower.describe()["preprocess"]["processor"].startswith({"clip": "CLIP"}.get(family, "Siglip"))
    assert text_tower.describe()["tokenizer"]["padding"] == padding["padding"]


def test_open_clip_local_dir_and_checkpoint_file_match_open_clip(tmp_path):
    import open_clip

    path = tiny_models.open_clip_model(tmp_path / "oc")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    with torch.no_grad():
        expected_images = model.encode_image(torch.stack([preprocess(p) for p in images()]))
        expected_texts = model.encode_text(tokenizer(TEXTS))
    (tmp_path / "xalign-tiny.json").write_text(json.dumps(tiny_models.OPEN_CLIP_CFG))
    open_clip.add_model_config(tmp_path / "xalign-tiny.json")  # registers the architecture 'xalign-tiny'
    for spec in (f"open_clip:{path}", f"open_clip:xalign-tiny@{path / 'open_clip_pytorch_model.bin'}"):
        image_tower, text_tower = load_image_backbone(spec, CPU), load_text_backbone(spec, CPU)
        close(expected_images, image_embeddings(image_tower, images()))
        close(expected_texts, F.normalize(text_tower.encode(TEXTS), dim=-1))
        assert image_tower.describe()["preprocess"]["size"] == [32, 32]
        assert image_tower.describe()["weights"] == text_tower.describe()["weights"] != "random-init(seed=0)"
    assert load_image_backbone("open_clip:xalign-tiny", CPU).describe()["weights"] == "random-init(seed=0)"
    with pytest.raises(BadInput, match=r"open_clip has no architecture 'ViT-Q-99'"):
        load_image_backbone("open_clip:ViT-Q-99@x", CPU)


@pytest.mark.parametrize("side", ["right", "left"])
def test_decoder_last_token_pooling_matches_one_text_at_a_time(tmp_path, side):
    import transformers as tf

    path = tiny_models.decoder_model(tmp_path / "decoder", padding_side=side)
    tower = load_text_backbone(f"decoder:{path}", CPU)
    model, tokenizer = tf.AutoModel.from_pretrained(path).eval(), tf.AutoTokenizer.from_pretrained(path)
    expected = []
    with torch.no_grad():
        for text in TEXTS:  # no padding at all: the EOS token's final hidden state
            ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
            expected.append(model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1])
    close(torch.stack(expected), F.normalize(tower.encode(TEXTS), dim=-1))
    assert tower.describe()["pooling"].startswith("last-token") and tower.describe()["weights_dtype"] == "float32"
    with pytest.raises(BadInput, match=r"model type 'mistral' is not one of \['clip', 'siglip', 'siglip2'\]"):
        load_text_backbone(f"hf:{path}", CPU)


def test_minilm_matches_sentence_transformers_encode():
    from sentence_transformers import SentenceTransformer

    from encoding.backbones.sentence_transformers import resolve_local

    tower = load_text_backbone("st:sentence-transformers/all-MiniLM-L6-v2", CPU)
    model = SentenceTransformer(resolve_local("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    close(model.encode(TEXTS, normalize_embeddings=True), F.normalize(tower.encode(TEXTS), dim=-1))
    assert tower.dim == 384 and tower.default_prefix == ""


def test_e5_names_default_to_the_query_prefix():
    from encoding.backbones.sentence_transformers import _E5

    assert _E5.search("intfloat/e5-large-v2") and _E5.search("intfloat/multilingual-e5-base")
    assert not _E5.search("intfloat/e5-mistral-7b-instruct") and not _E5.search("all-MiniLM-L6-v2")


def test_timm_weights_file_matches_timm_and_wrong_file_is_refused(tmp_path):
    import timm

    torch.manual_seed(5)
    reference = timm.create_model("resnet18", num_classes=0).eval()
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    tower = load_image_backbone(f"timm:resnet18@{tmp_path / 'r18.pt'}", CPU, image_size=32)
    pixels = torch.stack([tower.preprocess(p) for p in images()])
    with torch.no_grad():
        close(reference(pixels), F.normalize(tower.encode(pixels), dim=-1))
    assert tower.describe()["preprocess"]["input_size"] == [3, 32, 32]
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(BadInput, match=r"other.pt' does not fit this architecture"):
        load_image_backbone(f"timm:resnet18@{tmp_path / 'other.pt'}", CPU)
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(BadInput, match=r"other.pt' lacks weights of this architecture"):
        load_image_backbone(f"timm:resnet18@{tmp_path / 'other.pt'}", CPU)
    with pytest.raises(BadInput, match=r"timm has no model 'resnet19'"):
        load_image_backbone("timm:resnet19", CPU)
