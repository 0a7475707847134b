"""Figures (valid PNGs of the expected pixel size) and the run report's cost side."""

import json

import numpy as np
import pytest
import torch
from conftest import write_synthetic_cache
from PIL import Image

from encoding.commands import split
from pipeline.config.experiment import load_config
from pipeline.reporting import plots, report
from pipeline.runs.directory import train_run

pytestmark = pytest.mark.rendered_figures


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_png_with_and_without_labels(tmp_path, method):
    rng = np.random.default_rng(0)
    images, captions = rng.normal(size=(20, 8)), rng.normal(size=(40, 8))
    labels = np.arange(20) % 4
    plots.embedding_projection(images, captions, labels, labels[np.arange(40) // 2], tmp_path / "a.png", method)
    assert png_size(tmp_path / "a.png") == (1200, 500)
    plots.embedding_projection(images, captions, None, None, tmp_path / "b.png", method)
    assert png_size(tmp_path / "b.png") == (600, 500)


def test_sample_points_keeps_captions_of_sampled_images_within_the_budget():
    index = np.repeat(np.arange(300), 5)
    images, captions = plots.sample_points(300, index, 100)
    assert len(images) == 50 and len(captions) == 50
    assert np.isin(index[captions], images).all()
    images, captions = plots.sample_points(3, np.array([0, 0, 2]), 100)
    assert images.tolist() == [0, 1, 2] and captions.tolist() == [0, 1, 2]


def test_retrieval_gallery_png(tmp_path):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 24), (40 * i, 0, 0)).save(paths[-1])
    rows = np.array([[0, 1, 2, 3, 4], [5, 4, 3, 2, 1], [1, 0, 5, 2, 3]])
    scores = np.sort(np.random.default_rng(0).random((3, 5)))[:, ::-1]
    queries = ["a red square", "a long caption " * 6, "third"]
    plots.retrieval_gallery(queries, rows, scores, [str(p) for p in paths], [0, 2, 4], [1, 4, 6], tmp_path / "g.png")
    assert png_size(tmp_path / "g.png") == (1100, 720)  # 5 x 220 wide, 3 x 240 high


def test_training_curves_png(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 1 / (e + 1),
            "lr": 1e-3,
            **{f"val_{d}_R@{k}": 10.0 * e for d in ("i2t", "t2i") for k in (1, 10)},
        }
        for e in range(3)
    ]
    plots.training_curves(history, tmp_path / "c.png")
    assert png_size(tmp_path / "c.png") == (1500, 400)


def test_report_run_writes_figures_and_cost_side(tmp_path, monkeypatch):
    cache_dir = write_synthetic_cache(tmp_path / "cache", num_images=40)
    assert split.main([str(cache_dir), "--val", "8", "--test", "12", "--seed", "0"]) == 0
    images = tmp_path / "images"
    images.mkdir()
    monkeypatch.setattr(report, "TSNE_POINTS", 30)

    def with_real_paths(test, image, text, path):  # the synthetic cache's paths do not exist; give it real files
        for i in range(len(test.image_paths)):
            Image.new("RGB", (16, 16), (i * 20 % 255, 90, 90)).save(images / f"{i}.png")
        test.image_paths = np.array([str(images / f"{i}.png") for i in range(len(test.image_paths))], dtype=object)
        return write_gallery(test, image, text, path)

    write_gallery = report.write_gallery
    monkeypatch.setattr(report, "write_gallery", with_real_paths)
    config = load_config_for(cache_dir, tmp_path)
    run = train_run(config, tmp_path / "run")
    trainer, metrics = run.trainer, run.metrics
    run = tmp_path / "run"
    info = json.loads((run / "run_info.json").read_text())
    assert info["figures"] == ["training_curves.png", "pca.png", "tsne.png", "gallery.png"]
    assert png_size(run / "pca.png") == (1200, 500) and png_size(run / "tsne.png") == (1200, 500)
    assert png_size(run / "gallery.png") == (1100, 4 * 240)
    assert info["trainable_parameters"] == sum(p.numel() for p in trainer.model.parameters()) + 1  # + temperature
    assert info["train_seconds"] > 0 and info["inference_ms_per_1000_queries"] > 0 and info["peak_memory_mb"] > 0
    assert info["inference_gallery_images"] == metrics["num_images"] == 12


def load_config_for(cache_dir, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        f"name: r\ndata:\n  cache: {cache_dir}\nmodel:\n  output_dim: 8\n  hidden_dim: 16\n"
        "training:\n  num_epochs: 2\n  batch_size: 8\n  device: cpu\n"
    )
    return load_config(path)


def test_gallery_skipped_without_image_files(tmp_path):
    cache_dir = write_synthetic_cache(tmp_path / "cache", num_images=20)
    from pipeline.data.split_tensors import load_splits

    test = load_splits(cache_dir, ["all"])["all"]
    assert report.write_gallery(test, torch.zeros(20, 4), torch.zeros(len(test.text), 4), tmp_path / "g.png") is False
    assert not (tmp_path / "g.png").exists()
