"""`xalign backbone-train` on the real demo cache: one epoch of a tiny ViT and a tiny ResNet, exact resume,
the trained encoder back through `xalign encode --image-model CHECKPOINT`, and the step benchmark."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from backbone_configs import TINY_RESNET, TINY_VIT, straight_and_resumed, write_config

from encoding import cache
from encoding.backbones.image_encoder import build_image_encoder, eval_transform
from encoding.commands import split
from encoding.datasets import open_image
from pipeline import cli
from pipeline.commands import backbone_train
from pipeline.evaluation.metrics import retrieval_metrics
from pipeline.training.backbone import BackboneTrainer

MINILM = "st:sentence-transformers/all-MiniLM-L6-v2"
RUN_FILES = (
    "best.pt",
    "last.pt",
    "config.yaml",
    "history.jsonl",
    "training_curves.png",
    "metrics.json",
    "run_info.json",
)


@pytest.mark.parametrize("model", [TINY_VIT, TINY_RESNET], ids=["vit", "resnet"])
def test_one_epoch_writes_a_run_with_test_metrics(demo_cache, tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", demo_cache, model, accumulation_steps=2)
    assert cli.main(["backbone-train", str(config)]) == 0
    run = tmp_path / "results" / "tiny"
    assert all((run / name).is_file() for name in RUN_FILES)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] == 12 and metrics["num_captions"] == 60
    assert 0 <= metrics["t2i"]["R@1"] <= 100
    last = torch.load(run / "last.pt", weights_only=False)
    assert last["scheduler"]["last_epoch"] == 4  # 56 images / batch 8 = 7 micro-batches, 2 per step
    assert cli.main(["backbone-train", str(config)]) == 2  # refuses to overwrite an existing run


def test_resume_continues_exactly(demo_cache, tmp_path, monkeypatch):
    """Two epochs straight equal one epoch, a kill, and `--resume` (with workers in the second run)."""
    a, b = straight_and_resumed(tmp_path, demo_cache, TINY_VIT, monkeypatch, BackboneTrainer)
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    for key, value in a["encoder"].items():
        assert torch.equal(value, b["encoder"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_encode_with_the_checkpoint_closes_the_loop(demo_cache, tmp_path, monkeypatch):
    """The new cache's image embeddings are the trained encoder's, so its test metrics equal the run's."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", demo_cache, {**TINY_VIT, "pooling": "attention"})
    assert backbone_train.main([str(config)]) == 0
    checkpoint = tmp_path / "results" / "tiny" / "best.pt"
    root = cache.read_metadata(demo_cache)["dataset"]["root"]
    out = tmp_path / "encoded"
    argv = [
        "encode",
        "--dataset",
        "demo",
        "--root",
        root,
        "--out",
        str(out),
        "--image-model",
        str(checkpoint),
        "--text-model",
        MINILM,
        "--num-workers",
        "0",
        "--batch-size",
        "32",
        "--dtype",
        "float32",
    ]
    assert cli.main(argv) == 0
    meta = cache.read_metadata(out)
    assert meta["image_model"]["dim"] == 384 and meta["image_model"]["preprocess"]["image_size"] == [32, 32]
    arrays = cache.load_cache(out)
    payload = torch.load(checkpoint, weights_only=True)
    encoder = build_image_encoder(**payload["architecture"]).eval()
    encoder.load_state_dict(payload["encoder"])
    transform = eval_transform(32, payload["architecture"]["mean"], payload["architecture"]["std"])
    with torch.no_grad():
        pixels = torch.stack([transform(open_image(p)) for p in arrays.image_paths[:5]])
        expected = F.normalize(encoder(pixels), dim=-1)
    np.testing.assert_allclose(arrays.image_embeddings[:5], expected.numpy(), atol=1e-5)
    (out / cache.SPLITS).write_text((demo_cache / cache.SPLITS).read_text())
    test = arrays.select(cache.read_splits(out)["test"])
    again = retrieval_metrics(test.image_embeddings, test.caption_embeddings, test.caption_image_index)
    run_metrics = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    assert again["rsum"] == pytest.approx(run_metrics["rsum"], abs=1e-6)
    assert split.main([str(out), "--verify"]) == 0


def test_bench_prints_step_throughput(demo_cache, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", demo_cache, TINY_VIT)
    assert backbone_train.main([str(config), "--bench", "--bench-steps", "2"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("step_images_per_s", "loader_images_per_s", "pipeline_images_per_s"):
        assert figures[key] > 0
    assert figures["batch_size"] == 8 and figures["steps"] == 2
