"""The main job: `xalign demo` end to end, far above chance (the contract of the README's first command)."""

import json

import pytest

from pipeline import cli
from pipeline.metrics import chance_recall


@pytest.mark.slow
def test_demo_beats_chance_fivefold(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| t2i chance |" in out and "randomly initialised" in out
    run = tmp_path / "results" / "demo"
    for name in ("config.yaml", "best.pt", "metrics.json", "training_curves.png", "history.jsonl"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    n_images, n_captions = metrics["num_images"], metrics["num_captions"]
    assert metrics["split"] == "test" and n_images == 300 and n_captions == 1500
    assert metrics["t2i"]["R@10"] >= 5 * chance_recall(n_images, 10)
    assert metrics["i2t"]["R@10"] >= 5 * chance_recall(n_captions, 10, positives=5)
