"""Backbone mode's parts: config validation, encoder pooling against naive references, epoch plans,
seeded augmentation, and the checkpoint backbone's refusals."""

import numpy as np
import pytest
import torch
from backbone_configs import TINY_VIT
from PIL import Image

from encoding.backbones import load_image_backbone
from encoding.backbones.image_encoder import AttentionPooling, build_image_encoder
from encoding.errors import BadInput
from pipeline.config.backbone import from_dict
from pipeline.data.images import SplitImages, image_loader, train_transform
from pipeline.data.split_tensors import EpochSampler


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"colour": 1}}, r"unknown config key 'model.colour'; valid keys here: library, arch"),
        ({"training": {"batch_size": "big"}}, r"'training.batch_size': expected int"),
        ({"model": {"library": "keras"}}, r"model.library: unknown backbone library 'keras'; .*timm, torchvision"),
        ({"model": {"pooling": "max"}}, r"model.pooling: unknown pooling 'max'; choose one of: attention, avg"),
        ({"model": {"image_size": [32]}}, r"'model.image_size': expected a positive int or \[height, width\]"),
        ({"model": {"mean": [0.5]}}, r"'model.mean': expected three numbers"),
        ({"augment": {"crop_scale": 0}}, r"'augment.crop_scale': expected a number in \(0, 1\]"),
        ({"training": {"accumulation_steps": 0}}, r"'training.accumulation_steps': expected a finite number >= 1"),
        ({"training": {"precision": "fp8"}}, r"'training.precision': 'fp8' is not one of"),
        ({"loss": {"type": "triplet"}}, r"loss.type: unknown loss 'triplet'"),
    ],
)
def test_bad_config_names_the_key(values, message):
    with pytest.raises(BadInput, match=message):
        from_dict(values)


def test_config_reads_exponent_floats_and_nested_options():
    config = from_dict({"training": {"learning_rate": "3e-4"}, "model": {"options": {"depth": 2}}})
    assert config.training.learning_rate == 3e-4 and config.model.options == {"depth": 2}
    assert config.architecture(output_dim=7)["output_dim"] == 7


def test_unknown_architectures_are_refused():
    with pytest.raises(BadInput, match="timm has no model 'resnet1000'"):
        build_image_encoder(library="timm", arch="resnet1000", image_size=32, output_dim=4, hidden_dim=4)
    with pytest.raises(BadInput, match="model.options.*rejects"):
        build_image_encoder(**{**TINY_VIT, "options": {"wings": 2}}, output_dim=4)


def test_average_pooling_equals_the_library_model_without_classifier():
    """Trunk + pooling reproduces timm's own pooled features (class token for a ViT, mean for a CNN)."""
    import timm

    torch.manual_seed(0)
    encoder = build_image_encoder(**TINY_VIT, output_dim=4).eval()
    torch.manual_seed(0)
    reference = timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, img_size=(32, 32), patch_size=8, depth=1, embed_dim=32, num_heads=2
    ).eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pooled = encoder.pool(encoder.trunk(pixels))
        torch.testing.assert_close(pooled, reference(pixels))


def test_torchvision_trunk_is_cut_before_its_average_pool():
    import torchvision

    torch.manual_seed(0)
    encoder = build_image_encoder(library="torchvision", arch="resnet18", image_size=32, output_dim=4, hidden_dim=8)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    reference.fc = torch.nn.Identity()
    pixels = torch.randn(2, 3, 32, 32)
    encoder.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder.pool(encoder.trunk(pixels)), reference(pixels))
    with pytest.raises(BadInput, match="only timm ViTs take a patch size"):
        build_image_encoder(
            library="torchvision", arch="resnet18", image_size=32, patch_size=8, output_dim=4, hidden_dim=8
        )


def test_attention_pooling_matches_a_loop_over_positions():
    torch.manual_seed(0)
    pool = AttentionPooling(trunk=None, channels=5)
    features = torch.randn(2, 5, 3, 4)  # (B, C, h, w)
    expected = []
    for b in range(2):
        tokens = [features[b, :, i, j] for i in range(3) for j in range(4)]
        scores = torch.stack([pool.score(t).squeeze() for t in tokens])
        weights = torch.softmax(scores, dim=0)
        expected.append(sum(w * t for w, t in zip(weights, tokens)))
    torch.testing.assert_close(pool(features), torch.stack(expected))


def test_epoch_plan_shows_each_image_once_with_one_of_its_captions():
    caption_image_index = torch.tensor([0, 0, 1, 2, 2, 2, 4])  # image 3 has no caption
    sampler = EpochSampler(caption_image_index, 5, "image", seed=0, device="cpu")
    rows, captions = sampler.order(0)
    assert sorted(rows.tolist()) == [0, 1, 2, 4]
    assert torch.equal(caption_image_index[captions], rows)
    again = EpochSampler(caption_image_index, 5, "image", seed=0, device="cpu").order(0)
    assert torch.equal(again[0], rows) and torch.equal(again[1], captions)
    orders = {tuple(sampler.order(e)[0].tolist()) for e in range(8)}
    assert len(orders) > 1


def test_augmentation_depends_on_seed_epoch_and_row_not_on_workers(tmp_path):
    paths = []
    for i in range(6):
        pixels = np.random.default_rng(i).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    config = from_dict({"model": {"image_size": 32}})
    images = SplitImages(paths, train_transform(config.model, config.augment), seed=3)
    order = [5, 0, 3, 1, 4, 2]
    serial = torch.cat([p for _, p in image_loader(images, order, 2, 0, False, False)])
    parallel = torch.cat([p for _, p in image_loader(images, order, 2, 2, False, False)])
    assert torch.equal(serial, parallel)
    images.epoch = 1
    assert not torch.equal(serial, torch.cat([p for _, p in image_loader(images, order, 2, 0, False, False)]))


def test_checkpoint_backbone_refuses_other_files(tmp_path):
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(BadInput, match="not an encoder checkpoint of `xalign backbone-train`"):
        load_image_backbone(str(other), torch.device("cpu"))
    with pytest.raises(BadInput, match="checkpoint 'missing.pt' not found"):
        load_image_backbone("checkpoint:missing.pt", torch.device("cpu"))
    encoder = build_image_encoder(**TINY_VIT, output_dim=4)
    good = tmp_path / "best.pt"
    architecture = {**TINY_VIT, "output_dim": 4, "mean": [0.5] * 3, "std": [0.5] * 3}
    torch.save({"format": "xalign-backbone", "architecture": architecture, "encoder": encoder.state_dict()}, good)
    backbone = load_image_backbone(str(good), torch.device("cpu"))
    assert backbone.dim == 4 and backbone.preprocess(Image.new("RGB", (50, 20))).shape == (3, 32, 32)
    with pytest.raises(BadInput, match="was trained at size 32"):
        load_image_backbone(str(good), torch.device("cpu"), image_size=64)
