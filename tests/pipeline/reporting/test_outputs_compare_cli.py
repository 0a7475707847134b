"""Nothing lost: `--out` of compare and evaluate never replaces a run's own files; `compare results/*`
skips what is not a run, reports an unreadable run and still prints the rest, with each run's epochs;
a re-ranking K beyond the gallery is clamped with a warning naming the K used."""

import csv
import io
import json

import pytest
import yaml

from encoding.commands import split
from pipeline import cli
from pipeline.evaluation.rerank import clamp_warning
from tests.conftest import write_synthetic_cache

RECALLS = {"R@1": 50.0, "R@5": 50.0, "R@10": 50.0, "median_rank": 2.0, "mean_rank": 3.0}


def write_run(root, name, rsum=300.0, *, seed=0, epochs=None):
    """A run directory as `xalign train` leaves it (the files compare reads); `epochs`: (best 0-based, run)."""
    run = root / name
    run.mkdir(parents=True)
    metrics = {"split": "test", "num_images": 1000, "num_captions": 5000, "i2t": RECALLS, "t2i": RECALLS}
    (run / "metrics.json").write_text(json.dumps(metrics | {"rsum": rsum}))
    config = {"name": name, "model": {"type": "mlp"}, "training": {"seed": seed}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    info = {"train_seconds": 1.0} | ({} if epochs is None else {"best_epoch": epochs[0], "epochs": epochs[1]})
    (run / "run_info.json").write_text(json.dumps(info))
    (run / "best.pt").write_bytes(b"weights")
    return run


def compare(capsys, *argv):
    """(exit code, stdout lines, stderr) of `xalign compare ...`."""
    code = cli.main(["compare", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out.rstrip("\n").splitlines(), captured.err


def table(lines: list[str]) -> list[dict]:
    """The markdown table's rows as {header: cell}."""
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:] if line]


def test_compare_results_glob_skips_what_is_not_a_run(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "a", 310.0)
    write_run(results, "b", 300.0)
    (results / "README.md").write_text("# results/\n")
    (results / "optuna").mkdir()
    (results / "optuna" / "study.db").write_bytes(b"")
    code, lines, err = compare(capsys, *sorted(results.iterdir()))
    assert code == 0
    assert [row["run"] for row in table(lines)] == ["a", "b"]
    assert f"skipping {results / 'README.md'}: not a run directory or a metrics*.json file" in err
    assert f"skipping {results / 'optuna'}: no metrics.json" in err


@pytest.mark.parametrize(
    "file, text, message",
    [
        ("metrics.json", '{"split": "te', "metrics.json: "),  # the JSON error itself, named by the loader
        ("metrics.json", '{"rsum": "high"}', "metrics.json: rsum is 'high', not a number"),
        ("run_info.json", "[1, 2]", "run_info.json: expected a mapping, found list"),
    ],
)
def test_compare_reports_an_unreadable_run_and_prints_the_others(tmp_path, capsys, file, text, message):
    good, bad = write_run(tmp_path, "good"), write_run(tmp_path, "bad")
    (bad / file).write_text(text)
    code, lines, err = compare(capsys, good, bad)
    assert code == 0
    assert [row["run"] for row in table(lines)] == ["good"]
    assert f"skipping {bad}: {bad / file}" in err and message in err


def test_compare_exits_2_when_no_run_can_be_read(tmp_path, capsys):
    bad = write_run(tmp_path, "bad")
    (bad / "metrics.json").write_text("{")
    code, lines, err = compare(capsys, bad, tmp_path / "missing")
    assert code == 2 and lines == []
    assert f"skipping {tmp_path / 'missing'}: does not exist" in err
    assert "error: compare: no run to compare" in err and "(1 could not be read)" in err


def test_compare_shows_best_and_total_epochs(tmp_path, capsys):
    long = write_run(tmp_path, "long", 320.0, epochs=(6, 10))
    short = write_run(tmp_path, "short", 310.0, epochs=(1, 2))
    old = write_run(tmp_path, "old", 300.0)
    code, lines, _ = compare(capsys, long, short, old)
    assert code == 0
    assert [(row["run"], row["best/epochs"]) for row in table(lines)] == [
        ("long", "7/10"),
        ("short", "2/2"),
        ("old", ""),
    ]
    code, lines, _ = compare(capsys, long, short, "--csv")
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert [(row["best epoch"], row["epochs"]) for row in rows] == [("7", "10"), ("2", "2")]


def test_compare_group_shows_the_range_of_epochs(tmp_path, capsys):
    runs = [
        write_run(tmp_path, f"s{seed}", 300.0 + seed, seed=seed, epochs=e) for seed, e in enumerate([(4, 10), (8, 10)])
    ]
    code, lines, _ = compare(capsys, *runs, "--group-seeds")
    assert code == 0
    (row,) = table(lines)
    assert (row["seeds"], row["best/epochs"]) == ("2", "5–9/10")


@pytest.mark.parametrize("file", ["metrics.json", "metrics-val.json", "config.yaml", "best.pt", "run_info.json"])
def test_compare_out_refuses_a_runs_own_file(tmp_path, capsys, file):
    run = write_run(tmp_path / "results", "demo")
    (run / "metrics-val.json").write_text("{}")
    before = (run / file).read_bytes()
    code, lines, err = compare(capsys, run, "--out", run / file)
    assert code == 2 and lines == []
    assert f"--out {run / file}: is run {run}'s own {file}; writing it would replace the run's results" in err
    assert (run / file).read_bytes() == before


def test_compare_out_resolves_links_and_dots_and_allows_other_files(tmp_path, capsys):
    run = write_run(tmp_path / "results", "demo")
    (tmp_path / "link.json").symlink_to(run / "metrics.json")
    before = (run / "metrics.json").read_text()
    for out in (tmp_path / "link.json", tmp_path / "results" / "x" / ".." / "demo" / "metrics.json"):
        code, _, err = compare(capsys, run, "--out", out)
        assert code == 2 and f"--out {out} (= {run / 'metrics.json'}): is run {run}'s own metrics.json" in err
    assert (run / "metrics.json").read_text() == before
    assert compare(capsys, run, "--out", run / "table.md")[0] == 0  # a new file beside the records is fine
    assert (run / "table.md").read_text().startswith("| run |")


@pytest.mark.parametrize(
    "argv, file",
    [
        (["--split", "val"], "metrics.json"),  # val numbers under the test metrics' name
        ([], "config.yaml"),
        ([], "best.pt"),
        (["--split", "train"], "metrics-val.json"),
        (["--cache", "cache"], "metrics.json"),  # another cache's numbers under the run's own
    ],
)
def test_evaluate_out_refuses_a_runs_own_file(tmp_path, capsys, argv, file):
    run = write_run(tmp_path / "results", "demo")
    (run / "metrics-val.json").write_text("{}")
    before = (run / file).read_bytes()
    assert cli.main(["evaluate", str(run), *argv, "--out", str(run / file)]) == 2
    assert f"--out {run / file}: is run {run}'s own {file}" in capsys.readouterr().err
    assert (run / file).read_bytes() == before


def test_evaluate_out_of_a_cache_refuses_a_runs_metrics_through_dots(tmp_path, capsys, monkeypatch):
    run = write_run(tmp_path / "results", "demo")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["evaluate", "--cache", "cache", "--out", "results/x/../demo/metrics.json"]) == 2
    assert f"is run {run}'s own metrics.json" in capsys.readouterr().err


def test_evaluate_out_may_spell_out_the_default_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_synthetic_cache(tmp_path / "cache", num_images=30)
    assert split.main([str(tmp_path / "cache"), "--val", "5", "--test", "5", "--seed", "0"]) == 0
    (tmp_path / "run.yaml").write_text(
        "name: tiny\ndata:\n  cache: cache\nmodel:\n  output_dim: 8\n  hidden_dim: 16\n"
        "training:\n  num_epochs: 1\n  batch_size: 8\n  device: cpu\n"
    )
    assert cli.main(["train", "run.yaml"]) == 0
    run = tmp_path / "results" / "tiny"
    assert cli.main(["evaluate", "results/tiny", "--out", "results/tiny/metrics.json"]) == 0
    assert json.loads((run / "metrics.json").read_text())["split"] == "test"
    for _ in range(2):  # a new file, then the existing one: both the default target of --split val
        assert cli.main(["evaluate", "results/tiny", "--split", "val", "--out", str(run / "metrics-val.json")]) == 0
    assert json.loads((run / "metrics-val.json").read_text())["split"] == "val"


def test_clamp_warning_names_the_k_used_per_direction():
    metrics = {"split": "test", "num_images": 10, "num_captions": 20, "rerank_k": 1000}
    assert clamp_warning(metrics) == (
        "warning: rerank K 1000 exceeds the test split's gallery (10 images, 20 captions); clamped per direction: "
        "K 20 for i2t (captions per image), K 10 for t2i (images per caption)"
    )
    assert clamp_warning(metrics | {"rerank_k": 15}).endswith(
        "K 15 for i2t (captions per image), K 10 for t2i (images per caption)"
    )
    assert clamp_warning(metrics | {"rerank_k": 10}) is None
    assert clamp_warning({k: v for k, v in metrics.items() if k != "rerank_k"}) is None


def test_evaluate_rerank_k_beyond_the_gallery_is_clamped_with_a_warning(tmp_path, monkeypatch, capsys):
    from tests.pipeline.training.test_token_training import write_config

    monkeypatch.chdir(tmp_path)
    cache_dir = write_synthetic_cache(tmp_path / "cache", num_images=30, tokens=(3, 4), shard_size=30)
    assert split.main([str(cache_dir), "--val", "5", "--test", "6", "--seed", "0"]) == 0
    config = write_config(tmp_path, cache_dir, "cross", "cross_encoder", training={"num_epochs": 1})
    assert cli.main(["train", str(config)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "results/cross", "--rerank-k", "1000"]) == 0
    metrics = json.loads((tmp_path / "results" / "cross" / "metrics-rerank-k1000.json").read_text())
    captions = metrics["num_captions"]
    expected = f"K {captions} for i2t (captions per image), K 6 for t2i (images per caption)"
    assert metrics["rerank_k"] == 1000 and expected in capsys.readouterr().err
