"""A trial raising RuntimeError("bug") is FAIL, not PRUNED: the error in trials.csv, its traceback in the study's
sweep.log and not on the console (one line there), and the sweep goes on, with one worker and with two."""

import csv

import optuna
import pytest
from optuna.trial import TrialState
from tune_support import bug_on_hidden_dim_16, study_trials, work_with_a_bug, write_optuna_config

from pipeline import cli
from pipeline.training.pooled_heads import HeadTrainer
from pipeline.tuning import processes
from pipeline.tuning.objective import Objective, TrialError
from pipeline.tuning.settings import load_settings
from pipeline.tuning.storage import default_url

HIDDEN = {"model.hidden_dim": {"type": "categorical", "choices": [16, 32]}}
LOG = "results/optuna/tiny_study/sweep.log"


def _sweep(tmp_path, cache, hidden_dims: list[int]):
    """The optuna config of a two-epoch sweep over hidden_dim, its study holding trials of `hidden_dims` first."""
    config = write_optuna_config(tmp_path / "tune.yaml", cache, search_space=HIDDEN, training={"num_epochs": 2})
    (tmp_path / "results" / "optuna").mkdir(parents=True)
    study = optuna.create_study(study_name="tiny_study", storage=default_url("tiny_study"), direction="maximize")
    for hidden_dim in hidden_dims:
        study.enqueue_trial({"model.hidden_dim": hidden_dim})
    return config


def _failed_because(tmp_path) -> dict[int, str]:
    """trials.csv's `failed_because` by trial number, where there is one (not for a surplus or stale trial)."""
    rows = csv.DictReader((tmp_path / "results" / "optuna" / "tiny_study" / "trials.csv").open())
    return {int(r["number"]): r["failed_because"] for r in rows if r["failed_because"]}


def _assert_failed_loudly(tmp_path, numbers: list[int], capfd) -> None:
    """Trials `numbers` failed on the bug: in trials.csv, in sweep.log with a traceback, one stderr line each and
    no traceback on the console (the workers' output included)."""
    assert _failed_because(tmp_path) == dict.fromkeys(numbers, "RuntimeError: bug")
    log = (tmp_path / LOG).read_text()
    assert all(f"trial {n} failed (worker " in log for n in numbers)
    assert log.count("Traceback (most recent call last):") == log.count("RuntimeError: bug") == len(numbers)
    out, err = capfd.readouterr()
    for n in numbers:
        line = f"trial {n} FAIL (RuntimeError: bug; traceback in {LOG})"
        assert sum(m.startswith(line) for m in err.splitlines()) == 1
    assert "Traceback" not in out + err


def test_a_trial_raising_a_bug_fails_and_is_not_pruned(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(HeadTrainer, "run", bug_on_hidden_dim_16(HeadTrainer.run))
    objective = Objective(load_settings(write_optuna_config(tmp_path / "tune.yaml", synthetic_cache)))
    trial = optuna.trial.FixedTrial({"training.learning_rate": 0.01, "model.hidden_dim": 16})
    with pytest.raises(TrialError, match="RuntimeError: bug"):
        objective(trial)
    assert trial.user_attrs["failed_because"] == "RuntimeError: bug" and "pruned_because" not in trial.user_attrs


def test_a_bug_fails_its_trial_loudly_and_the_next_trial_runs(synthetic_cache, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(HeadTrainer, "run", bug_on_hidden_dim_16(HeadTrainer.run))
    config = _sweep(tmp_path, synthetic_cache, [16, 32])
    assert cli.main(["tune", str(config), "--n-trials", "2"]) == 0
    assert [t.state for t in study_trials(tmp_path)] == [TrialState.FAIL, TrialState.COMPLETE]
    _assert_failed_loudly(tmp_path, [0], capfd)


@pytest.mark.slow
def test_a_bug_in_a_worker_process_fails_its_trial_loudly_and_the_sweep_goes_on(
    synthetic_cache, tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(processes, "work", work_with_a_bug)  # the spawned workers' trials of hidden_dim 16 raise
    config = _sweep(tmp_path, synthetic_cache, [16, 32, 16, 32])
    assert cli.main(["tune", str(config), "--n-trials", "4", "--workers", "2"]) == 0
    trials = study_trials(tmp_path)
    failed = [t for t in trials if "failed_because" in t.user_attrs]
    assert [t.state for t in failed] == [TrialState.FAIL] * 2
    assert [t.params["model.hidden_dim"] for t in failed] == [16, 16]
    assert [t.params["model.hidden_dim"] for t in trials if t.state == TrialState.COMPLETE] == [32, 32]
    _assert_failed_loudly(tmp_path, [t.number for t in failed], capfd)
