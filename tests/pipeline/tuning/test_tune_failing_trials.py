"""A combination a head refuses and a trial with no epoch run are pruned with the reason in trials.csv; an
unexpected exception fails only its trial, with the error in trials.csv; the sweep goes on to exit 0."""

import csv

import optuna
import pytest
from tune_support import write_optuna_config

from pipeline import cli
from pipeline.training import pooled_heads as heads
from pipeline.training.loop import TrainResult
from pipeline.training.pooled_heads import HeadTrainer
from pipeline.tuning.objective import Objective
from pipeline.tuning.settings import load_settings

HIDDEN = {"model.hidden_dim": {"type": "categorical", "choices": [16, 32]}}


def _sweep(tmp_path, cache, space: dict, enqueued: list[dict]):
    """The optuna config of a two-epoch sweep over `space`, its study holding the `enqueued` trials first."""
    config = write_optuna_config(tmp_path / "tune.yaml", cache, search_space=space, training={"num_epochs": 2})
    (tmp_path / "results" / "optuna").mkdir(parents=True)
    url = f"sqlite:///{tmp_path / 'results' / 'optuna' / 'tiny_study.db'}"
    study = optuna.create_study(study_name="tiny_study", storage=url, direction="maximize")
    for params in enqueued:
        study.enqueue_trial(params)
    return config


def _rows(tmp_path) -> list[dict]:
    return list(csv.DictReader((tmp_path / "results" / "optuna" / "tiny_study" / "trials.csv").open()))


def test_an_exception_in_the_model_build_fails_only_that_trial(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build = heads.build_model_and_loss

    def failing_for_16(config, image_dim, text_dim):
        if config.model.hidden_dim == 16:
            raise RuntimeError("injected failure")
        return build(config, image_dim, text_dim)

    monkeypatch.setattr(heads, "build_model_and_loss", failing_for_16)
    config = _sweep(tmp_path, synthetic_cache, HIDDEN, [{"model.hidden_dim": h} for h in (16, 32, 16)])
    assert cli.main(["tune", str(config), "--n-trials", "3"]) == 0
    rows = _rows(tmp_path)
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "FAIL"]
    assert all(rows[i]["failed_because"] == "RuntimeError: injected failure" for i in (0, 2))


def test_a_combination_the_head_refuses_is_pruned_and_the_sweep_exits_0(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = {"model.type": {"type": "categorical", "choices": ["mlp", "attention"]}}
    config = _sweep(tmp_path, synthetic_cache, space, [{"model.type": "attention"}, {"model.type": "mlp"}])
    overrides = ["--set", "model.num_tokens=8", "--set", "model.num_heads=3"]  # hidden_dim 32 % 3 heads
    assert cli.main(["tune", str(config), "--n-trials", "2", *overrides]) == 0
    rows = _rows(tmp_path)
    assert [r["state"] for r in rows] == ["PRUNED", "COMPLETE"]
    assert rows[0]["pruned_because"].startswith("BadInput: ") and "num_heads 3" in rows[0]["pruned_because"]


def test_a_trial_in_which_no_epoch_ran_is_pruned(synthetic_cache, tmp_path, monkeypatch):
    settings = load_settings(write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, search_space=HIDDEN))
    objective = Objective(settings)
    monkeypatch.setattr(HeadTrainer, "run", lambda self, on_epoch_end=None: TrainResult(-1.0, -1, 0))
    trial = optuna.trial.FixedTrial({"model.hidden_dim": 16})
    with pytest.raises(optuna.TrialPruned, match="no epoch ran"):
        objective(trial)
    assert trial.user_attrs["pruned_because"] == "no epoch ran, so there is no score"
