"""The objective against a direct training run (FixedTrial), and a NaN loss ending a trial as pruned."""

import logging

import optuna
import pytest
from tune_support import write_optuna_config

from pipeline.data.split_tensors import load_splits
from pipeline.training.pooled_heads import HeadTrainer
from pipeline.tuning.objective import Objective
from pipeline.tuning.settings import load_settings

PARAMS = {"training.learning_rate": 0.01, "model.hidden_dim": 16}


def test_fixed_trial_matches_a_direct_training_run(synthetic_cache, tmp_path):
    settings = load_settings(write_optuna_config(tmp_path / "tune.yaml", synthetic_cache))
    objective = Objective(settings)
    trial = optuna.trial.FixedTrial(PARAMS)
    value = objective(trial)

    config, applied = settings.experiment(PARAMS)
    assert config.training.learning_rate == 0.01 and config.model.hidden_dim == 16
    assert config.data.train_split == "train"  # the best config trains on the full split; trials use tuning
    splits = load_splits(synthetic_cache, ["tuning", "val"])
    reference = HeadTrainer(config, splits["tuning"], splits["val"]).run()
    assert len(splits["tuning"].image) == 20
    assert value == pytest.approx(max(r["val_rsum"] for r in reference.history))
    assert trial.user_attrs["config"] == config.to_dict()
    assert trial.user_attrs["epochs_run"] == reference.epochs_run
    assert trial.user_attrs["applied_options"] == ",".join(applied) and "model.hidden_dim" in applied
    assert objective.epoch_seconds > 0


def test_r_at_1_metric_and_minimize(synthetic_cache, tmp_path):
    path = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, metric="t2i_R@1", direction="minimize")
    settings = load_settings(path)
    value = Objective(settings)(optuna.trial.FixedTrial(PARAMS))
    splits = load_splits(synthetic_cache, ["tuning", "val"])
    history = HeadTrainer(settings.experiment(PARAMS)[0], splits["tuning"], splits["val"]).run().history
    assert value == pytest.approx(min(r["val_t2i_R@1"] for r in history))


def test_non_finite_loss_prunes_the_trial(synthetic_cache, tmp_path):
    space = {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e31, "log": True}}
    settings = load_settings(write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, search_space=space))
    trial = optuna.trial.FixedTrial({"training.learning_rate": 1e30})
    with pytest.raises(optuna.TrialPruned, match="NonFiniteLoss: epoch 0"):
        Objective(settings)(trial)
    assert "training loss is nan" in trial.user_attrs["pruned_because"]


def test_missing_tuning_subset_falls_back_to_train(synthetic_cache, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="xalign")
    monkeypatch.setattr(logging.getLogger("xalign"), "propagate", True)  # off once a command configured logging
    path = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, train_split="nonexistent")
    objective = Objective(load_settings(path))
    assert objective.train_split == "train" and len(objective.train.image) == 40
    assert any("has no 'nonexistent' images; trials train on 'train'" in message for message in caplog.messages)


def test_a_combination_the_head_refuses_prunes_the_trial(synthetic_cache, tmp_path):
    space = {"model.type": {"type": "categorical", "choices": ["attention"]}}
    path = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, search_space=space)
    settings = load_settings(path, ["model.hidden_dim=32", "model.num_tokens=8", "model.num_heads=3"])
    trial = optuna.trial.FixedTrial({"model.type": "attention"})
    with pytest.raises(optuna.TrialPruned, match="BadInput: .*num_heads 3"):
        Objective(settings)(trial)
    assert "model.num_heads 3" in trial.user_attrs["pruned_because"]
