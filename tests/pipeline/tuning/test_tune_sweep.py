"""A 4-trial sweep with pruning through `xalign tune`, its artifacts, and the best config trained by `xalign train`."""

import contextlib
import csv
import io
import json

import optuna
import pytest
import yaml
from conftest import write_synthetic_cache
from tune_support import write_optuna_config

from encoding.commands import split
from pipeline import cli
from pipeline.tuning.storage import default_url

GOOD = {"training.learning_rate": 3e-2, "model.hidden_dim": 32}
SPACE = {
    "training.learning_rate": {"type": "categorical", "choices": [3e-2, 1e-7]},
    "model.hidden_dim": {"type": "categorical", "choices": [16, 32]},
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A 4-trial sweep run once in its own directory: three enqueued trials, then one sampled; 1e-7 learning rates
    fall behind the first two and are pruned. Returns (directory, stdout)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    synthetic_cache = write_synthetic_cache(tmp_path / "cache")
    assert split.main([str(synthetic_cache), "--val", "10", "--test", "10", "--tuning", "20", "--seed", "0"]) == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        return tmp_path, _run_sweep(tmp_path, synthetic_cache)


def _run_sweep(tmp_path, synthetic_cache) -> str:
    pruner = {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1}
    path = write_optuna_config(
        tmp_path / "tune.yaml", synthetic_cache, pruner=pruner, search_space=SPACE, training={"num_epochs": 5}
    )
    (tmp_path / "results" / "optuna").mkdir(parents=True)
    study = optuna.create_study(study_name="tiny_study", storage=default_url("tiny_study"), direction="maximize")
    study.enqueue_trial(GOOD)
    study.enqueue_trial({**GOOD, "model.hidden_dim": 16})
    study.enqueue_trial({**GOOD, "training.learning_rate": 1e-7})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["tune", str(path)]) == 0
    return out.getvalue()


@pytest.fixture
def sweep(sweep_dir, monkeypatch):
    """(study, stdout) of the module's sweep, with the working directory set to it."""
    monkeypatch.chdir(sweep_dir[0])
    return optuna.load_study(study_name="tiny_study", storage=default_url("tiny_study")), sweep_dir[1]


def test_sweep_prunes_and_writes_artifacts(sweep, sweep_dir):
    study, out = sweep
    tmp_path = sweep_dir[0]
    states = [t.state for t in study.trials]
    assert len(states) == 4 and optuna.trial.TrialState.PRUNED in states
    assert all(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
    slow = [t for t in study.trials if t.params["training.learning_rate"] == 1e-7]
    assert slow and all(t.state == optuna.trial.TrialState.PRUNED and len(t.intermediate_values) < 5 for t in slow)

    out_dir = tmp_path / "results" / "optuna" / "tiny_study"
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["complete"] + summary["pruned"] == 4 and summary["best_trial"] == study.best_trial.number
    assert 0 < summary["overhead"]["overhead_fraction"] < 1
    assert "per-trial overhead:" in out and "train it: xalign train" in out
    rows = list(csv.DictReader((out_dir / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    assert {r["state"] for r in rows} >= {"COMPLETE", "PRUNED"}
    assert float(rows[study.best_trial.number]["value"]) == pytest.approx(study.best_value)
    for png in ("optimization_history.png", "param_importances.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_config_trains_with_xalign_train(sweep, sweep_dir):
    study, _ = sweep
    tmp_path = sweep_dir[0]
    best_path = tmp_path / "results" / "optuna" / "tiny_study" / "best_config.yaml"
    best = yaml.safe_load(best_path.read_text())
    assert best["name"] == "tiny_study_best" and best["data"]["train_split"] == "train"
    assert best["training"]["learning_rate"] == study.best_params["training.learning_rate"]
    assert best["model"]["hidden_dim"] == study.best_params["model.hidden_dim"]
    assert cli.main(["train", str(best_path)]) == 0
    metrics = json.loads((tmp_path / "results" / "tiny_study_best" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["rsum"] > 0


def test_rerun_of_a_finished_study_runs_nothing(sweep, sweep_dir, capsys):
    tmp_path = sweep_dir[0]
    assert cli.main(["tune", str(tmp_path / "tune.yaml")]) == 0
    assert "4 of 4 trials finished" in capsys.readouterr().err
    assert len(optuna.load_study(study_name="tiny_study", storage=default_url("tiny_study")).trials) == 4


def test_one_completed_trial_skips_the_importance_plot(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, n_trials=1)
    assert cli.main(["tune", str(path)]) == 0
    out_dir = tmp_path / "results" / "optuna" / "tiny_study"
    assert (out_dir / "optimization_history.png").exists() and not (out_dir / "param_importances.png").exists()
    assert "skipped param_importances.png: needs 2 completed trials" in capsys.readouterr().out


def test_bad_cli_input_exits_2(tmp_path, capsys):
    assert cli.main(["tune", str(tmp_path / "missing.yaml")]) == 2
    assert "optuna config file not found" in capsys.readouterr().err
    path = write_optuna_config(tmp_path / "tune.yaml", tmp_path)
    assert cli.main(["tune", str(path), "--workers", "0"]) == 2


def test_improvements_rewrite_the_best_config_and_due_plots(sweep, sweep_dir, monkeypatch):
    """The callback behind "written on every improvement": tables each time, plots once `plot_interval` passed."""
    from pipeline.tuning.artifacts import ImprovementWriter
    from pipeline.tuning.settings import load_settings

    study, _ = sweep
    out_dir = sweep_dir[0] / "results" / "optuna" / "tiny_study"
    for name in ("best_config.yaml", "trials.csv", "optimization_history.png"):
        (out_dir / name).unlink()
    writer = ImprovementWriter(load_settings(sweep_dir[0] / "tune.yaml"), plot_interval=3600)
    not_best = next(t for t in study.trials if t.number != study.best_trial.number)
    writer(study, not_best)
    assert not (out_dir / "best_config.yaml").exists()
    writer(study, study.best_trial)
    assert (out_dir / "best_config.yaml").exists() and (out_dir / "trials.csv").exists()
    assert not (out_dir / "optimization_history.png").exists()
    writer.plot_interval = 0
    writer(study, study.best_trial)
    assert (out_dir / "optimization_history.png").exists()


def test_grid_sweep_stops_when_every_point_ran(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = {"model.type": {"type": "categorical", "choices": ["mlp", "linear"]}}
    path = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, sampler="grid", n_trials=10, search_space=space)
    assert cli.main(["tune", str(path)]) == 0
    trials = optuna.load_study(study_name="tiny_study", storage=default_url("tiny_study")).trials
    assert sorted(t.params["model.type"] for t in trials) == ["linear", "mlp"]
