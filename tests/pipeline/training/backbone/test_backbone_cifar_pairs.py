"""Backbone training on generated CIFAR-100-format pairs (32x64 images, 8x8 ViT patches), encoded by the real
`cifar100 --pairs` reader; then the trained encoder encodes the pairs again."""

import json
import pickle

import numpy as np
import pytest
import torch
from backbone_configs import TINY_RESNET, TINY_VIT, write_config

from encoding import cache
from encoding.commands import encode, split
from encoding.datasets import DATASETS
from pipeline.commands import backbone_train

MINILM = "st:sentence-transformers/all-MiniLM-L6-v2"
CLASSES = [f"thing{c:02d}" for c in range(100)]


def write_cifar100(root, n_train: int, n_test: int, seed: int = 0):
    """`train`, `test` and `meta` pickles in CIFAR-100's python format: rows of 3072 uint8 (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 6, size=n)
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[:, :1024] = (labels * 40)[:, None]  # the class sets the red plane: something to learn
        payload = {
            b"data": data,
            b"fine_labels": labels.tolist(),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        (root / name).write_bytes(pickle.dumps(payload))
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": [c.encode() for c in CLASSES]}))
    return root


@pytest.fixture(scope="module")
def pairs_cache(tmp_path_factory):
    assert "cifar100" in DATASETS.names()
    tmp = tmp_path_factory.mktemp("cifar")
    root = write_cifar100(tmp / "cifar-100-python", n_train=30, n_test=10)
    out = tmp / "cache"
    argv = [
        "--dataset",
        "cifar100",
        "--pairs",
        "--root",
        str(root),
        "--out",
        str(out),
        "--image-model",
        "timm:test_resnet",
        "--image-size",
        "32",
        "--text-model",
        MINILM,
        "--batch-size",
        "32",
        "--num-workers",
        "0",
    ]
    assert encode.main(argv) == 0
    assert split.main([str(out), "--predefined", "--tuning", "10"]) == 0
    return out


def train_one_epoch(pairs_cache, tmp_path, model) -> dict:
    """One epoch of `model` on the pairs at 32x64 → the run's test metrics."""
    data = {"val_split": "tuning"}  # the predefined CIFAR split has no val part
    config = write_config(tmp_path / "c.yaml", pairs_cache, {**model, "image_size": [32, 64]}, data=data)
    assert backbone_train.main([str(config), "--set", "augment.flip=0"]) == 0
    return json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())


def test_resnet_one_epoch_on_pairs(pairs_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = train_one_epoch(pairs_cache, tmp_path, TINY_RESNET)
    assert metrics["num_images"] == 10 and metrics["num_captions"] == 30


def test_vit_one_epoch_on_pairs_then_encode_with_the_result(pairs_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = train_one_epoch(pairs_cache, tmp_path, TINY_VIT)
    assert metrics["num_images"] == 10  # every pair of CIFAR test images, none seen in training
    run = tmp_path / "results" / "tiny"
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["architecture"]["image_size"] == [32, 64] and best["architecture"]["patch_size"] == 8
    out = tmp_path / "encoded"
    root = cache.read_metadata(pairs_cache)["dataset"]["root"]
    argv = [
        "--dataset",
        "cifar100",
        "--pairs",
        "--root",
        root,
        "--out",
        str(out),
        "--image-model",
        str(run / "best.pt"),
        "--text-model",
        MINILM,
        "--num-workers",
        "0",
    ]
    assert encode.main(argv) == 0
    assert cache.read_metadata(out)["image_model"]["preprocess"]["image_size"] == [32, 64]
    arrays = cache.load_cache(out)
    assert arrays.image_embeddings.shape == (40, 384)
    assert np.allclose(np.linalg.norm(arrays.image_embeddings, axis=1), 1, atol=1e-2)
