"""A user's first hour: chance levels that match the split, a demo that says where its data is and whose
config does not collide with the heads loop, progress where the user waits (and no library load bars),
figures that read right."""

import io
import itertools
import sys

import numpy as np
import optuna
import pytest
import torch
from conftest import write_synthetic_cache
from huggingface_hub.utils import are_progress_bars_disabled
from PIL import Image

from encoding.datasets.demo import build_demo
from encoding.encode import EncodeRequest, encode_cache
from pipeline import cli
from pipeline.commands import demo
from pipeline.config.experiment import load_config
from pipeline.data.split_tensors import SplitTensors
from pipeline.evaluation.metrics import chance_median_rank, chance_recall, median
from pipeline.evaluation.rerank import reranked_metrics
from pipeline.reporting import plots, report
from pipeline.reporting.tables import metrics_table
from pipeline.runs.directory import train_run
from pipeline.tuning.artifacts import draw

HEADS = demo.CONFIG.parents[0] / "heads"


class Terminal(io.StringIO):
    """stderr as a terminal: progress bars (`disable=None`) draw into it."""

    def isatty(self) -> bool:
        return True


def terminal(monkeypatch) -> Terminal:
    """Make stderr a terminal for the rest of the test (inside it: capsys replaces stderr as the test starts)."""
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def best_ranks(gallery: int, positives: int) -> list[int]:
    """The rank of the best positive for every equally likely placing of `positives` items among `gallery`."""
    return [min(places) for places in itertools.combinations(range(1, gallery + 1), positives)]


@pytest.mark.parametrize("gallery,positives", [(6, 1), (7, 1), (7, 2), (8, 3), (9, 5), (10, 4), (12, 5), (5, 5)])
def test_chance_median_rank_and_recall_equal_enumeration(gallery, positives):
    ranks = torch.tensor(best_ranks(gallery, positives))
    assert chance_median_rank(gallery, positives) == median(ranks)  # the metrics' median: mean of the middle two
    for k in (1, 2, 5):
        assert chance_recall(gallery, k, positives) == pytest.approx(100 * (ranks <= k).double().mean().item())


def test_chance_median_rank_at_demo_size_matches_a_simulation():
    rng = np.random.default_rng(0)
    draws = np.argpartition(rng.random((4000, 1500)), 5, axis=1)[:, :5] + 1  # 5 distinct ranks of 1..1500 per row
    simulated = np.median(draws.min(axis=1))
    assert chance_median_rank(1500, 5) == 194.0 and abs(simulated - 194.0) < 10
    assert chance_median_rank(300) == 150.5 and chance_median_rank(301) == 151.0


def test_chance_row_uses_the_captions_per_image():
    ranks = {"R@1": 10.0, "R@5": 30.0, "R@10": 50.0, "median_rank": 11.0}
    metrics = {"split": "test", "num_images": 300, "num_captions": 1500, "i2t": ranks, "t2i": ranks, "rsum": 180.0}
    table = metrics_table(metrics, with_chance=True)
    assert "| i2t chance | 0.3 | 1.7 | 3.3 | 194.0 |" in table  # was 750: half the captions, as for one positive
    assert "| t2i chance | 0.3 | 1.7 | 3.3 | 150.5 |" in table


def test_no_config_in_the_heads_loop_trains_into_the_demos_run():
    demo_name = load_config(demo.CONFIG).name
    assert demo.CONFIG.parent != HEADS
    assert demo_name not in {load_config(path).name for path in HEADS.glob("*.yaml")}


def test_demo_prints_the_dataset_root_it_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "encode_cache", lambda request: write_synthetic_cache(request.out))
    tiny = ["training.num_epochs=1", "training.device=cpu", "model.output_dim=8", "model.hidden_dim=16"]
    assert cli.main(["demo", "--out", str(tmp_path), "--images", "60", *(x for s in tiny for x in ("--set", s))]) == 0
    out = capsys.readouterr().out
    assert f"dataset root {tmp_path / 'data' / 'demo' / '60'} (for `xalign encode --dataset demo --root`)" in out


def test_encode_shows_caption_progress_and_shard_lines_but_no_weight_loading_bar(tmp_path, monkeypatch):
    err = terminal(monkeypatch)
    build_demo(tmp_path / "data", num_images=20)
    request = EncodeRequest(
        dataset="demo",
        root=tmp_path / "data",
        out=tmp_path / "cache",
        image_model="timm:resnet18",
        image_size=32,
        text_model="st:sentence-transformers/all-MiniLM-L6-v2",
        shard_size=10,
        batch_size=16,
        num_workers=0,
        tokens=True,
    )
    encode_cache(request)
    err = err.getvalue()
    assert "encode: 100%" in err and "50 captions" in err  # the image bar, and each shard's caption bar
    assert "Loading weights" not in err
    assert "shard 1/2 written (10 images, 50 captions)" in err and "shard 2/2 written" in err
    assert not are_progress_bars_disabled()  # the hub's download bars stay


def test_rerank_and_the_run_report_say_what_runs(tmp_path, monkeypatch):
    err = terminal(monkeypatch)
    torch.manual_seed(0)
    image, text = torch.randn(6, 4), torch.randn(12, 4)
    reranked_metrics(image, text, torch.arange(12) // 2, 3, lambda i, c: (image[i] * text[c]).sum(dim=1))
    assert "re-rank i2t top 3" in err.getvalue() and "re-rank t2i top 3" in err.getvalue()

    cache_dir = write_synthetic_cache(tmp_path / "cache", num_images=40)
    assert cli.main(["split", str(cache_dir), "--val", "8", "--test", "12", "--seed", "0"]) == 0
    config = tmp_path / "c.yaml"
    config.write_text(f"name: r\ndata: {{cache: {cache_dir}}}\ntraining: {{num_epochs: 2, device: cpu}}\n")
    run = train_run(load_config(config), tmp_path / "run")
    best = run.result.best_epoch + 1
    said = err.getvalue()
    assert f"testing epoch {best} on the test split (12 images, " in said and "time per 1000 queries" in said
    assert "timing 1000 queries" in said


def test_training_curves_number_epochs_from_one_and_keep_the_legend_off_the_curves():
    history = [
        {
            "epoch": e,
            "train_loss": 1 / (e + 1),
            "lr": 1e-3,
            **{f"val_{d}_R@{k}": 90.0 for d in ("i2t", "t2i") for k in (1, 10)},
        }
        for e in range(3)
    ]
    fig = plots.curves_figure(history)
    fig.tight_layout()
    fig.canvas.draw()
    loss, recall, _ = fig.axes
    assert list(loss.lines[0].get_xdata()) == [1, 2, 3]
    assert all(float(t).is_integer() for t in loss.get_xticks())
    legend = recall.get_legend().get_window_extent()
    assert not legend.overlaps(recall.get_window_extent())  # the curves at 90% sit where an inside legend goes


@pytest.mark.parametrize("count", [3, 10, 15, 100])
def test_class_colours_give_every_class_its_own_colour(count):
    labels = np.arange(count) * 7 + 3  # sparse label values, as CIFAR pairs (100 * left + right)
    codes, cmap, classes = plots.class_colours(np.concatenate([labels, labels[::-1]]))
    assert cmap.N == count and len({tuple(cmap(i)) for i in range(count)}) == count
    assert classes.tolist() == labels.tolist() and codes[:count].tolist() == list(range(count))


def test_gallery_names_the_right_images_rank_beyond_the_top_five(tmp_path, monkeypatch):
    paths = []
    for i in range(8):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(paths[-1])
    image = torch.eye(8)
    text = torch.tensor([[0.0, 7, 6, 5, 4, 3, 2, 1], [9.0, 0, 0, 0, 0, 0, 0, 0]])  # caption 0's image ranks 8th
    test = SplitTensors(image, text, torch.tensor([0, 0]), np.array([]), np.array(["far", "near"]), np.array(paths))
    shown = {}
    monkeypatch.setattr(report, "retrieval_gallery", lambda *args: shown.update(ranks=list(args[5])))
    assert report.write_gallery(test, image, text, tmp_path / "g.png")
    assert shown["ranks"] == [8, 1]
    assert plots.query_label("far", 8, 5, 8).endswith("right image: rank 8 of 8")
    assert plots.query_label("near", 1, 5, 8) == "near"


def test_optuna_history_numbers_trials_with_whole_ticks():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    figure = draw(optuna.visualization.matplotlib.plot_optimization_history, study, None)
    figure.canvas.draw()
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)
