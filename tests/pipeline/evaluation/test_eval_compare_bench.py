"""`xalign compare` tables and `xalign bench eval` at tiny sizes."""

import json

import pytest
import yaml

from pipeline import cli


def fake_run(root, name: str, rsum: float, head: str = "mlp", with_info: bool = True):
    """A run directory as `xalign train` leaves it (the files compare reads)."""
    run = root / name
    run.mkdir(parents=True)
    recalls = {"R@1": rsum / 6, "R@5": rsum / 6, "R@10": rsum / 6, "median_rank": 2.0, "mean_rank": 3.0}
    metrics = {"split": "test", "num_images": 1000, "num_captions": 5000, "i2t": recalls, "t2i": recalls, "rsum": rsum}
    (run / "metrics.json").write_text(json.dumps(metrics))
    config = {
        "name": name,
        "model": {"type": head, "output_dim": 64},
        "loss": {"type": "clip"},
        "training": {"learning_rate": 3e-4, "batch_size": 32},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if with_info:
        info = {
            "trainable_parameters": 12345,
            "train_seconds": 4.25,
            "inference_ms_per_1000_queries": 1.5,
            "peak_memory_mb": 800.0,
        }
        (run / "run_info.json").write_text(json.dumps(info))
    return run


def test_compare_markdown_sorted_by_rsum(tmp_path, capsys):
    runs = [
        fake_run(tmp_path, "low", 60.0),
        fake_run(tmp_path, "high", 420.0, "linear"),
        fake_run(tmp_path, "mid", 300.0, with_info=False),
    ]
    (tmp_path / "optuna").mkdir()
    assert cli.main(["compare", *map(str, runs), str(tmp_path / "optuna")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("| run | head | loss | output_dim | lr | batch | split | test gallery | i2t R@1")
    assert "params | train s | ms / 1k queries | peak MB |" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["high", "mid", "low"]
    assert "| high | linear | clip | 64 | 0.0003 | 32 | test | 1000/5000 | 70.0 |" in lines[2]
    assert lines[2].endswith("| 420.0 | 12,345 | 4.2 | 1.5 | 800 |")
    assert lines[3].endswith("| 300.0 |  |  |  |  |")
    assert "skipping" in captured.err and "optuna" in captured.err and "warning" not in captured.err


def test_compare_csv_and_out_file(tmp_path, capsys):
    runs = [fake_run(tmp_path, "a", 100.0), fake_run(tmp_path, "b", 200.0)]
    out = tmp_path / "table.csv"
    assert cli.main(["compare", *map(str, runs), "--csv", "--out", str(out)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].split(",")[:3] == ["run", "head", "loss"] and rows[1].startswith("b,") and rows[2].startswith("a,")
    assert out.read_text().strip().splitlines() == rows


def test_compare_without_any_run_is_bad_input(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "holds a metrics.json" in capsys.readouterr().err


def test_bench_eval_tiny_prints_json_last(capsys):
    assert cli.main(["bench", "eval", "--images", "300", "--captions", "900", "--dim", "16", "--repeats", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    for key in ("chunked_s", "matmul_s", "chunked_vs_matmul", "peak_rss_mb", "working_mb", "images", "captions"):
        assert key in result, key
    assert result["images"] == 300 and result["captions"] == 900 and result["dim"] == 16
    assert result["chunked_vs_matmul"] == pytest.approx(result["chunked_s"] / result["matmul_s"])
    assert result["peak_rss_mb"] >= result["rss_with_inputs_mb"] > 0
    assert out[0].startswith("| images | captions |")


def test_bench_eval_bad_sizes(capsys):
    assert cli.main(["bench", "eval", "--images", "0"]) == 2
    assert "--images 0: must be a positive integer" in capsys.readouterr().err
    assert cli.main(["bench", "eval", "--captions", "10"]) == 2
    assert "--captions needs --images" in capsys.readouterr().err
