"""`kill -9` in the middle of a trial, then the same command again: exactly n_trials finished trials."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState
from tune_support import study_trials, write_optuna_config

REPO = Path(__file__).resolve().parents[3]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _tune(config: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipeline.cli", "tune", str(config)]
    return subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True)


def _wait_mid_trial(process: subprocess.Popen, cwd: Path, timeout: float = 90) -> None:
    """Until one trial finished and another has reported an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        trials = study_trials(cwd)
        finished = [t for t in trials if t.state in FINISHED]
        running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
        if finished and running:
            return
        time.sleep(0.2)
    raise AssertionError(f"no trial was mid-way before the deadline (exit code {process.poll()})")


def test_kill_mid_trial_and_resume(synthetic_cache, tmp_path):
    config = write_optuna_config(
        tmp_path / "tune.yaml", synthetic_cache, training={"num_epochs": 200, "patience": 1000}
    )
    first = _tune(config, tmp_path)
    _wait_mid_trial(first, tmp_path)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = [t for t in study_trials(tmp_path) if t.state == TrialState.RUNNING]
    assert len(killed) == 1

    second = _tune(config, tmp_path)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out
    trials = study_trials(tmp_path)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state in FINISHED for t in trials) == 4
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [killed[0].number]  # failed by its heartbeat, not left RUNNING
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retries) == 1 and retries[0].state in FINISHED and retries[0].params == killed[0].params
    assert "4 of 4" not in out and "per-trial overhead" in out
