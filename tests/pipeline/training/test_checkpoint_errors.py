"""Bad checkpoints and diverging runs are bad input (exit 2 naming the file), never a traceback:
`train --resume` with another architecture or a damaged last.pt, `evaluate` of a damaged best.pt or of
one carrying a pickle payload (never run), and a loss that turns NaN. A damaged checkpoint is caught by its
recorded sha256 first; with `--no-verify` the loader still refuses it."""

import os
from pathlib import Path

import pytest
import torch
from conftest import write_head_config

from pipeline import cli
from pipeline.training.pooled_heads import HeadTrainer


class Payload:
    """Unpickling this runs `touch MARKER`; weights_only loading must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def damage(path: Path, how: str, marker: Path) -> None:
    """Replace the checkpoint at `path` with garbage, its first half, or a pickle payload."""
    if how == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 64)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save({"model": Payload(marker)}, path)


@pytest.mark.parametrize("how", ["garbage", "truncated", "payload"])
def test_resume_from_a_damaged_last_pt_is_bad_input(run_copy, tmp_path, capsys, how):
    run, config = run_copy
    marker = tmp_path / "MARKER"
    damage(run / "last.pt", how, marker)
    argv = ["train", str(config), "--resume", "--set", "training.num_epochs=3"]
    assert cli.main(argv) == 2
    assert f"{Path('results') / 'x' / 'last.pt'}: sha256 " in capsys.readouterr().err  # caught by its hash
    assert cli.main([*argv, "--no-verify"]) == 2
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
    assert f"{run / 'best.pt'}: sha256 " in capsys.readouterr().err  # caught by its hash
    assert cli.main(["evaluate", str(run), "--no-verify"]) == 2
    assert f"{run / 'best.pt'}: not a readable checkpoint of this project" in capsys.readouterr().err
    assert not marker.exists()


def test_a_diverging_run_exits_2_naming_the_config_and_the_keys(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(HeadTrainer, "batch_loss", lambda self, batch: torch.tensor(float("nan"), requires_grad=True))
    config = write_head_config(tmp_path, synthetic_cache)
    assert cli.main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: epoch 0: training loss is nan; the run diverged")
    assert "training.learning_rate" in err and "loss.temperature" in err


def test_a_huge_learning_rate_diverges_into_exit_2(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", str(write_head_config(tmp_path, synthetic_cache, learning_rate=1e30))]) == 2
    assert "training loss is nan; the run diverged" in capsys.readouterr().err
