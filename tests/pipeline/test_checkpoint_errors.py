"""Bad checkpoints and diverging runs are bad input (exit 2 naming the file), never a traceback:
`train --resume` with another architecture or a damaged last.pt, `evaluate` of a damaged best.pt or of
one carrying a pickle payload (never run), and a loss that turns NaN."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_synthetic_cache

from encoding.commands import split
from pipeline import cli
from pipeline.training.heads import HeadTrainer


class Payload:
    """Unpickling this runs `touch MARKER`; weights_only loading must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _config(tmp_path: Path, cache: Path, learning_rate: float = 1e-3) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"name: x\ndata: {{cache: {cache}}}\nmodel: {{output_dim: 8, hidden_dim: 16}}\n"
        f"training: {{num_epochs: 2, batch_size: 8, device: cpu, learning_rate: {learning_rate}}}\n"
    )
    return path


def damage(path: Path, how: str, marker: Path) -> None:
    """Replace the checkpoint at `path` with garbage, its first half, or a pickle payload."""
    if how == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 64)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save({"model": Payload(marker)}, path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(directory, config) of a finished two-epoch run `results/x`, trained once for the module."""
    root = tmp_path_factory.mktemp("trained")
    cache = write_synthetic_cache(root / "cache")
    assert split.main([str(cache), "--val", "10", "--test", "10", "--seed", "0"]) == 0
    config = _config(root, cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert cli.main(["train", str(config)]) == 0
    return root, config


@pytest.fixture
def run_copy(trained, tmp_path, monkeypatch):
    """A private copy of the trained run under `tmp_path` (the working directory); returns (run, config)."""
    root, config = trained
    shutil.copytree(root / "results", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "results" / "x", config


@pytest.mark.parametrize("how", ["garbage", "truncated", "payload"])
def test_resume_from_a_damaged_last_pt_is_bad_input(run_copy, tmp_path, capsys, how):
    run, config = run_copy
    marker = tmp_path / "MARKER"
    damage(run / "last.pt", how, marker)
    assert cli.main(["train", str(config), "--resume", "--set", "training.num_epochs=3"]) == 2
    err = capsys.readouterr().err
    assert f"{Path('results') / 'x' / 'last.pt'}: not a readable checkpoint of this project" in err
    assert not marker.exists()


def test_resume_with_another_architecture_is_bad_input(run_copy, capsys):
    run, config = run_copy
    argv = ["train", str(config), "--resume", "--set", "training.num_epochs=3", "--set", "model.hidden_dim=32"]
    assert cli.main(argv) == 2
    assert "the config differs in model.hidden_dim: 16 -> 32" in capsys.readouterr().err
    (run / "provenance.json").unlink()  # a run that recorded no provenance: the weights still do not fit
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{Path('results') / 'x' / 'last.pt'}: its weights do not fit this model" in err


@pytest.mark.parametrize("how", ["garbage", "truncated", "payload"])
def test_evaluate_of_a_damaged_best_pt_is_bad_input(run_copy, tmp_path, capsys, how):
    run, _ = run_copy
    marker = tmp_path / "MARKER"
    damage(run / "best.pt", how, marker)
    assert cli.main(["evaluate", str(run)]) == 2
    assert f"{run / 'best.pt'}: not a readable checkpoint of this project" in capsys.readouterr().err
    assert not marker.exists()


def test_a_diverging_run_exits_2_naming_the_config_and_the_keys(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(HeadTrainer, "batch_loss", lambda self, batch: torch.tensor(float("nan"), requires_grad=True))
    config = _config(tmp_path, synthetic_cache)
    assert cli.main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: epoch 0: training loss is nan; the run diverged")
    assert "training.learning_rate" in err and "loss.temperature" in err


def test_a_huge_learning_rate_diverges_into_exit_2(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", str(_config(tmp_path, synthetic_cache, learning_rate=1e30))]) == 2
    assert "training loss is nan; the run diverged" in capsys.readouterr().err
