"""`xalign compare` as a paper table: provenance columns, tiny-gallery mark, seed groups, LaTeX, CSV."""

import csv
import io
import json

import pytest
import yaml

from pipeline import cli
from pipeline.reporting.comparison import run_label

IMAGE_SPEC = "open_clip:ViT-B-32@laion2b_s34b_b79k"
TEXT_SPEC = "st:sentence-transformers/all-MiniLM-L6-v2"
CACHE_FP = "ab12cd34" + "0" * 56
SPLITS_FP = "5e1f0a99" + "1" * 56
FOOTNOTE = "test gallery under 100 images: recall at K is close to trivial"


def provenance(cache_fingerprint: str = CACHE_FP) -> dict:
    """The `provenance` object a run's metrics.json carries."""
    return {
        "cache": "/data/pretrain_encoded/coco_vitb32",
        "cache_fingerprint": cache_fingerprint,
        "splits_fingerprint": SPLITS_FP,
        "dataset": {"kind": "coco", "root": "/data/coco", "annotations": "captions_val2017.json"},
        "image_model": {"spec": IMAGE_SPEC, "dim": 512},
        "text_model": {"spec": TEXT_SPEC, "dim": 384},
        "config_sha256": "f" * 64,
        "versions": {"torch": "2.4.0"},
    }


def write_run(root, name, rsum, *, seed=0, head="mlp", images=1000, captions=5000, prov=None, train_s=10.0):
    """A run directory as `xalign train` leaves it; every recall is rsum / 6."""
    run = root / name
    run.mkdir(parents=True)
    recalls = {"R@1": rsum / 6, "R@5": rsum / 6, "R@10": rsum / 6, "median_rank": 2.0, "mean_rank": 3.0}
    metrics = {"split": "test", "num_images": images, "num_captions": captions, "i2t": recalls, "t2i": recalls}
    metrics["rsum"] = rsum
    if prov is not None:
        metrics["provenance"] = prov
    (run / "metrics.json").write_text(json.dumps(metrics))
    config = {
        "name": name,
        "data": {"cache": "pretrain_encoded/coco_vitb32"},
        "model": {"type": head, "output_dim": 64},
        "loss": {"type": "clip"},
        "training": {"learning_rate": 3e-4, "batch_size": 32, "seed": seed},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    info = {"trainable_parameters": 1000, "train_seconds": train_s, "inference_ms_per_1000_queries": 1.5}
    (run / "run_info.json").write_text(json.dumps(info | {"peak_memory_mb": 800.0}))
    return str(run)


def compare(capsys, *argv):
    """(exit code, stdout lines, stderr) of `xalign compare ...`."""
    code = cli.main(["compare", *argv])
    captured = capsys.readouterr()
    return code, captured.out.rstrip("\n").splitlines(), captured.err


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def seed_runs(tmp_path) -> list[str]:
    """Three seeds of one config (rsum 300, 310, 320; train 10, 20, 30 s) and one other config (rsum 315)."""
    runs = [
        write_run(tmp_path, f"mlp-seed{s}", rsum, seed=s, prov=provenance(), train_s=10.0 * (s + 1))
        for s, rsum in enumerate((300.0, 310.0, 320.0))
    ]
    return runs + [write_run(tmp_path, "linear", 315.0, head="linear", prov=provenance())]


def test_provenance_columns_and_empty_cells_for_old_runs(tmp_path, capsys):
    runs = [write_run(tmp_path, "new", 300.0, prov=provenance()), write_run(tmp_path, "old", 200.0)]
    code, lines, err = compare(capsys, *runs)
    assert code == 0 and err == ""
    header = cells(lines[0])
    assert header[:7] == ["run", "dataset", "cache", "image backbone", "text backbone", "head", "loss"]
    assert "test gallery" in header and not any("fingerprint" in name for name in header)
    new, old = (dict(zip(header, cells(line))) for line in lines[2:])
    assert (new["run"], new["dataset"], new["cache"]) == ("new", "coco", "coco_vitb32")
    assert (new["image backbone"], new["text backbone"]) == (IMAGE_SPEC, TEXT_SPEC)
    assert new["test gallery"] == "1000/5000" and new["rsum"] == "300.0"
    assert [old[k] for k in ("dataset", "cache", "image backbone", "text backbone")] == ["", "", "", ""]
    assert old["head"] == "mlp" and old["test gallery"] == "1000/5000"


def test_csv_shortens_fingerprints_and_splits_the_gallery(tmp_path, capsys):
    runs = [write_run(tmp_path, "new", 300.0, prov=provenance()), write_run(tmp_path, "old", 200.0)]
    code, lines, _ = compare(capsys, *runs, "--csv")
    new, old = csv.DictReader(io.StringIO("\n".join(lines)))
    assert (new["cache fingerprint"], new["splits fingerprint"]) == ("ab12cd34", "5e1f0a99")
    assert (new["test images"], new["test captions"], new["rsum"]) == ("1000", "5000", "300.0")
    assert old["cache fingerprint"] == old["dataset"] == ""


def test_tiny_gallery_is_marked_ranked_last_and_warned(tmp_path, capsys):
    runs = [write_run(tmp_path, "toy", 500.0, images=40, captions=200), write_run(tmp_path, "real", 300.0)]
    code, lines, err = compare(capsys, *runs)
    assert code == 0
    header = cells(lines[0])
    real, toy = (dict(zip(header, cells(line))) for line in lines[2:4])
    assert (real["run"], real["test gallery"]) == ("real", "1000/5000")
    assert (toy["run"], toy["test gallery"], toy["rsum"]) == ("toy", "40/200 †", "500.0")
    assert lines[4:] == ["", f"† {FOOTNOTE}"]
    assert "warning" in err and "toy" in err and "real" not in err


def test_group_seeds_mean_and_sample_std(tmp_path, capsys):
    code, lines, err = compare(capsys, *seed_runs(tmp_path), "--group-seeds")
    assert code == 0 and err == ""
    header = cells(lines[0])
    assert header[:3] == ["run", "seeds", "dataset"]
    linear, mlp = (dict(zip(header, cells(line))) for line in lines[2:])
    assert len(lines) == 4
    assert (linear["run"], linear["seeds"], linear["rsum"]) == ("linear", "1", "315.0")
    # rsum 300, 310, 320: mean 310, sample std 10; R@1 = rsum / 6: 51.67 ± 1.67; train 10, 20, 30 s: mean 20
    assert (mlp["run"], mlp["seeds"], mlp["rsum"]) == ("mlp-seed*", "3", "310.0 ± 10.0")
    assert mlp["i2t R@1"] == mlp["t2i R@10"] == "51.7 ± 1.7"
    assert (mlp["train s"], mlp["params"], mlp["cache"]) == ("20.0", "1,000", "coco_vitb32")


def test_group_seeds_never_mixes_fingerprints(tmp_path, capsys):
    runs = [
        write_run(tmp_path, "a0", 300.0, seed=0, prov=provenance()),
        write_run(tmp_path, "a1", 310.0, seed=1, prov=provenance()),
        write_run(tmp_path, "b0", 320.0, seed=2, prov=provenance("99" * 32)),
        write_run(tmp_path, "c0", 330.0, seed=3),
    ]
    code, lines, _ = compare(capsys, *runs, "--group-seeds")
    header = cells(lines[0])
    rows = [dict(zip(header, cells(line))) for line in lines[2:]]
    assert [(row["run"], row["seeds"]) for row in rows] == [("c0", "1"), ("b0", "1"), ("a0, a1", "2")]
    assert rows[2]["rsum"] == "305.0 ± 7.1"


def test_latex_booktabs_escapes_and_footnote(tmp_path, capsys):
    runs = [write_run(tmp_path, "mlp_base", 300.0, prov=provenance()), write_run(tmp_path, "toy", 500.0, images=40)]
    out = tmp_path / "table.tex"
    code, lines, _ = compare(capsys, *runs, "--latex", "--out", str(out))
    assert code == 0 and out.read_text() == "\n".join(lines) + "\n"
    assert lines[0].startswith(r"\begin{tabular}{l") and lines[-1] == r"\end{tabular}"
    assert [lines[1], lines[3], lines[6]] == [r"\toprule", r"\midrule", r"\bottomrule"]
    assert lines[2].startswith(r"run & dataset & cache & image backbone") and lines[2].endswith(r" \\")
    assert lines[4].startswith(r"mlp\_base & coco & coco\_vitb32 & open\_clip:ViT-B-32@laion2b\_s34b\_b79k & ")
    assert r"& 40/5000\textsuperscript{\dag} &" in lines[5]
    width = lines[2].count("&") + 1
    assert lines[7] == rf"\multicolumn{{{width}}}{{l}}{{\footnotesize \textsuperscript{{\dag}}\,{FOOTNOTE}}} \\"
    assert all(line.count("&") + 1 == width for line in lines[4:6])


def test_latex_group_rows_use_pm(tmp_path, capsys):
    code, lines, _ = compare(capsys, *seed_runs(tmp_path), "--group-seeds", "--latex")
    assert code == 0 and lines[5].startswith(r"mlp-seed* & 3 & coco & ")
    assert r"& 310.0 $\pm$ 10.0 &" in lines[5] and r"\dag" not in "\n".join(lines)


def test_csv_group_mode_has_mean_and_std_columns(tmp_path, capsys):
    code, lines, _ = compare(capsys, *seed_runs(tmp_path), "--group-seeds", "--csv")
    linear, mlp = csv.DictReader(io.StringIO("\n".join(lines)))
    assert (mlp["run"], mlp["seeds"], float(mlp["rsum mean"]), float(mlp["rsum std"])) == (
        "mlp-seed0;mlp-seed1;mlp-seed2",
        "3",
        310.0,
        10.0,
    )
    assert float(mlp["train s mean"]) == 20.0 and "train s std" not in mlp
    assert (linear["rsum mean"], linear["rsum std"]) == ("315.0", "")


def test_csv_and_latex_exclude_each_other(tmp_path, capsys):
    code, _, err = compare(capsys, write_run(tmp_path, "a", 300.0), "--csv", "--latex")
    assert code == 2 and "not allowed with" in err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rsum": "high"}, "metrics.json: rsum is 'high', not a number"),
        ({"num_images": None, "num_captions": "many"}, "metrics.json: num_captions is 'many', not a number"),
    ],
)
def test_a_number_that_is_not_a_number_is_bad_input(tmp_path, capsys, change, message):
    run = write_run(tmp_path, "a", 300.0)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text()) | change
    (tmp_path / "a" / "metrics.json").write_text(json.dumps(metrics))
    code, _, err = compare(capsys, run)
    assert code == 2 and message in err


def test_a_metrics_file_that_is_not_a_mapping_is_bad_input(tmp_path, capsys):
    run = write_run(tmp_path, "a", 300.0)
    (tmp_path / "a" / "metrics.json").write_text("[1, 2]")
    code, _, err = compare(capsys, run)
    assert code == 2 and "metrics.json: expected a mapping, found list" in err


@pytest.mark.parametrize(
    "names, label",
    [
        (("solo-run-with-a-rather-long-name-indeed",), "solo-run-with-a-rather-long-name-indeed"),
        (("a", "b"), "a, b"),
        (("clip-seed0", "clip-seed1", "clip-seed2"), "clip-seed*"),
        (("alpha-long-name", "beta-long-name", "gamma-long-name"), "alpha-long-name +2"),
    ],
)
def test_run_label(names, label):
    assert run_label(names) == label


def test_backbone_runs_show_the_towers_they_trained_not_the_caches_backbones():
    from pipeline.reporting.comparison import towers

    metrics = {"provenance": {"image_model": {"spec": "timm:resnet18"}, "text_model": {"spec": "st:minilm"}}}
    assert towers({"model": {"type": "mlp"}}, metrics) == {"image": "timm:resnet18", "text": "st:minilm"}
    frozen_text = {"model": {"library": "timm", "arch": "vit_tiny_patch16_224"}}
    assert towers(frozen_text, metrics) == {"image": "trained timm:vit_tiny_patch16_224", "text": "st:minilm"}
    two_tower = {"model": {"library": "timm", "arch": "resnet18", "text": {"library": "hf", "arch": "distilbert"}}}
    assert towers(two_tower, metrics) == {"image": "trained timm:resnet18", "text": "trained hf:distilbert"}
