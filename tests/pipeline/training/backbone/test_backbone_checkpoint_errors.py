"""Backbone runs: `backbone-train --resume` with another architecture or a damaged last.pt, and `evaluate` of
a damaged best.pt, are bad input (exit 2 naming the file): caught by the recorded sha256, and with `--no-verify`
by the loader. The checkpoints are written without training (no image is decoded), so a synthetic cache serves."""

from pathlib import Path

import pytest
from backbone_configs import TINY_VIT, write_config

from pipeline import cli
from pipeline.config.backbone import from_dict
from pipeline.config.experiment import load_config
from pipeline.data.split_tensors import load_splits
from pipeline.training.backbone import BackboneTrainer
from pipeline.training.checkpoint import resumable_state, save_checkpoint

LAST = Path("results") / "tiny" / "last.pt"


@pytest.fixture
def backbone_run(synthetic_cache, tmp_path, monkeypatch):
    """(config path, run directory) of a backbone run `results/tiny` holding an epoch-0 last.pt and best.pt."""
    monkeypatch.chdir(tmp_path)
    config_path = write_config(tmp_path / "c.yaml", synthetic_cache, TINY_VIT)
    config = load_config(config_path, validate=from_dict)
    splits = load_splits(synthetic_cache, ["train", "val"])
    trainer = BackboneTrainer(config, splits["train"], splits["val"])
    run = tmp_path / "results" / "tiny"
    run.mkdir(parents=True)
    save_checkpoint({**trainer.checkpoint(), **resumable_state(trainer)}, run / "last.pt")
    save_checkpoint({**trainer.checkpoint(), "val_rsum": 0.0}, run / "best.pt")
    return config_path, run


def test_resume_with_another_architecture_is_bad_input(backbone_run, capsys):
    config, _ = backbone_run
    assert cli.main(["backbone-train", str(config), "--resume", "--set", "model.hidden_dim=64"]) == 2
    assert f"{LAST}: its weights do not fit this model" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_resume_from_a_damaged_last_pt_is_bad_input(backbone_run, capsys, how):
    config, run = backbone_run
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(b"\x00garbage" * 64 if how == "garbage" else data[: len(data) // 2])
    assert cli.main(["backbone-train", str(config), "--resume"]) == 2
    assert f"{LAST}: sha256 " in capsys.readouterr().err
    assert cli.main(["backbone-train", str(config), "--resume", "--no-verify"]) == 2
    assert f"{LAST}: not a readable checkpoint of this project" in capsys.readouterr().err


def test_evaluate_refuses_a_damaged_backbone_checkpoint(backbone_run, capsys):
    _, run = backbone_run
    (run / "best.pt").write_bytes(b"PK\x03\x04 truncated zip")
    assert cli.main(["evaluate", str(run)]) == 2
    assert f"{run / 'best.pt'}: sha256 " in capsys.readouterr().err
    assert cli.main(["evaluate", str(run), "--no-verify"]) == 2
    assert f"{run / 'best.pt'}: not a readable checkpoint of this project" in capsys.readouterr().err
