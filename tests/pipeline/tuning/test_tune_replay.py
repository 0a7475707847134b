"""A rerun of a sweep draws new parameter sets: after `kill -9` and after a plain rerun with a larger
--n-trials, no two finished trials share a parameter set (a sampler reseeded with the configured seed
alone would replay the first run's draws)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from tune_support import study_trials, write_optuna_config

from pipeline import cli
from pipeline.tuning.algorithms import sampler_seed

REPO = Path(__file__).resolve().parents[3]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SPACE = {
    "training.learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    "model.hidden_dim": {"type": "categorical", "choices": [16, 32]},
}


def _config(tmp_path: Path, cache: Path, sampler: str) -> Path:
    sampler_spec = {"type": sampler, "seed": 0}
    return write_optuna_config(
        tmp_path / "tune.yaml", cache, sampler=sampler_spec, search_space=SPACE, training={"num_epochs": 2}
    )


def _finished_params(cwd: Path) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study_trials(cwd) if t.state in FINISHED]


def _tune(config: Path, cwd: Path, n_trials: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipeline.cli", "tune", str(config), "--n-trials", str(n_trials)]
    return subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True)


def _kill_after_finished(process: subprocess.Popen, cwd: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if (cwd / "results" / "optuna" / "tiny_study.db").exists() and len(_finished_params(cwd)) >= count:
            break
        time.sleep(0.2)
    assert process.poll() is None, f"the sweep ended before it was killed (exit code {process.returncode})"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_rerun_after_kill_9_draws_new_parameter_sets(synthetic_cache, tmp_path):
    config = _config(tmp_path, synthetic_cache, "random")
    first = _tune(config, tmp_path, n_trials=50)
    _kill_after_finished(first, tmp_path, count=2)
    done = len(_finished_params(tmp_path))
    second = _tune(config, tmp_path, n_trials=done + 3)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    params = _finished_params(tmp_path)
    assert len(params) == done + 3 and len(set(params)) == len(params)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_rerun_with_more_trials_draws_new_parameter_sets(synthetic_cache, tmp_path, monkeypatch, sampler):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, synthetic_cache, sampler)
    assert cli.main(["tune", str(config), "--n-trials", "2"]) == 0
    assert cli.main(["tune", str(config), "--n-trials", "4"]) == 0
    params = _finished_params(tmp_path)
    assert len(params) == 4 and len(set(params)) == 4


def test_each_worker_and_study_size_gets_its_own_seed():
    seeds = {sampler_seed(7, worker, trials) for worker in range(8) for trials in range(50)}
    assert len(seeds) == 8 * 50 and sampler_seed(7, 0, 0) == 7  # a fresh study's first worker keeps its seed


@pytest.mark.parametrize("workers", [1, 2])
def test_a_grid_rerun_runs_each_remaining_point_once(synthetic_cache, tmp_path, monkeypatch, workers):
    """Every process shuffles the grid with the same seed, so a stored grid id names the same point in all.
    (Two workers may both run the last point: Optuna's grid sampler hands out a running point again once
    every point has started.)"""
    monkeypatch.chdir(tmp_path)
    space = {
        "training.learning_rate": {"type": "categorical", "choices": [1e-2, 3e-2]},
        "model.hidden_dim": {"type": "categorical", "choices": [16, 32]},
    }
    config = write_optuna_config(
        tmp_path / "tune.yaml", synthetic_cache, sampler={"type": "grid", "seed": 0}, search_space=space
    )
    assert cli.main(["tune", str(config), "--n-trials", "1"]) == 0
    assert cli.main(["tune", str(config), "--n-trials", "10", "--workers", str(workers)]) == 0
    params = _finished_params(tmp_path)
    assert len(set(params)) == 4  # every point ran
    assert workers > 1 or len(params) == 4  # and one worker ran each exactly once
