"""End-to-end smoke test through the CLI entry point: split → train → evaluate on the real demo cache."""

import json

import pytest

from pipeline import cli


@pytest.mark.rendered_figures
def test_train_and_evaluate_through_cli(demo_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"name: smoke\ndata:\n  cache: {demo_cache}\ntraining:\n  num_epochs: 2\n  batch_size: 16\n")
    assert cli.main(["train", str(config), "--set", "model.output_dim=32", "--set", "model.hidden_dim=64"]) == 0
    run = tmp_path / "results" / "smoke"
    for name in ("config.yaml", "best.pt", "last.pt", "history.jsonl", "training_curves.png", "metrics.json"):
        assert (run / name).is_file(), name
    assert cli.main(["evaluate", str(run), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] == 12
    assert metrics == json.loads((run / "metrics.json").read_text())
