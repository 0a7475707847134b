"""Nothing lost, nothing hangs: a killed worker is replaced and the sweep ends; a space that cannot apply fails
at load; a sweep without a completed trial exits 1 saying why; a code error fails its trial; progress per trial."""

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tune_support import study_trials, write_optuna_config

from encoding.errors import BadInput
from pipeline import cli
from pipeline.training.pooled_heads import HeadTrainer
from pipeline.tuning.settings import load_settings
from pipeline.tuning.storage import default_url

REPO = Path(__file__).resolve().parents[3]


def _running_worker_pid(process: subprocess.Popen, cwd: Path, timeout: float = 120) -> int:
    """The pid of a worker process that is training a trial (its `worker` attribute is `host:pid`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        trials = study_trials(cwd)
        running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
        if running:
            return int(running[0].user_attrs["worker"].rsplit(":", 1)[1])
        time.sleep(0.2)
    raise AssertionError(f"no trial was running before the deadline (exit code {process.poll()})")


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_sweep_ends(synthetic_cache, tmp_path):
    config = write_optuna_config(
        tmp_path / "tune.yaml", synthetic_cache, n_trials=6, training={"num_epochs": 40, "patience": 1000}
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipeline.cli", "tune", str(config), "--workers", "2"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True, text=True, **pipes)
    try:
        victim = _running_worker_pid(process, tmp_path)
        assert victim != process.pid
        os.kill(victim, signal.SIGKILL)
        out, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, out + err
    trials = study_trials(tmp_path)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 6
    killed = [t for t in trials if t.user_attrs.get("worker", "").endswith(f":{victim}") and t.state == TrialState.FAIL]
    assert len(killed) == 1  # failed by its heartbeat, then retried
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert f"pid {victim}" in err and "started a replacement" in err
    lines = [line.split(" ", 3) for line in err.splitlines() if line.startswith("trial ")]  # logged by the parent
    assert sum(state in ("COMPLETE", "PRUNED") for _, _, state, _ in lines) == 6
    killed_line = ["trial", str(killed[0].number), "FAIL"]
    assert any(line[:3] == killed_line and "its worker stopped sending heartbeats" in line[3] for line in lines)


def test_a_float_space_on_an_int_key_is_bad_input_at_load(synthetic_cache, tmp_path, capsys):
    space = {"model.num_layers": {"type": "float", "low": 1, "high": 3}}
    config = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, search_space=space)
    assert cli.main(["tune", str(config)]) == 2
    err = capsys.readouterr().err
    assert "search_space.model.num_layers: config key 'model.num_layers': expected int, got float 1.0" in err
    assert "heads that take 'model.num_layers': attention" in err and "mlp" in err


@pytest.mark.parametrize(
    ("space", "conditional", "message"),
    [
        (
            {"model.num_heads": {"type": "categorical", "choices": [2, 4]}},
            {},
            r"search_space\.model\.num_heads: no head this study samples \(mlp\) takes it, so no trial would apply "
            r"it; heads that take 'model\.num_heads': attention, ",
        ),
        (
            {"model.type": {"type": "categorical", "choices": ["mlp", "linear"]}},
            {"model.type": {"linear": {"model.hidden_dim": {"type": "categorical", "choices": [16, 32]}}}},
            r"conditional\.model\.type\.linear\.model\.hidden_dim: no head this study samples \(linear\) takes it",
        ),
        (
            {"loss.queue_size": {"type": "int", "low": 8, "high": 16}},
            {},
            r"search_space\.loss\.queue_size: no loss this study samples \(clip\) takes it.*: blip, infonce_queue",
        ),
    ],
)
def test_a_key_no_sampled_head_takes_is_bad_input_at_load(synthetic_cache, tmp_path, space, conditional, message):
    path = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, search_space=space, conditional=conditional)
    with pytest.raises(BadInput, match=message):
        load_settings(path)


def test_a_key_some_sampled_head_takes_loads(synthetic_cache, tmp_path):
    space = {
        "model.type": {"type": "categorical", "choices": ["mlp", "attention"]},
        "model.num_heads": {"type": "categorical", "choices": [2, 4]},
    }
    path = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, search_space=space)
    assert set(load_settings(path).space.params) == set(space)


def _study_dir(tmp_path) -> Path:
    return tmp_path / "results" / "optuna" / "tiny_study"


@pytest.mark.slow
def test_a_code_error_fails_its_trial_and_a_sweep_without_a_completed_trial_exits_1(
    synthetic_cache, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)

    def broken(self, on_epoch_end=None):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(HeadTrainer, "run", broken)
    config = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, training={"num_epochs": 2})
    assert cli.main(["tune", str(config), "--n-trials", "2"]) == 1
    captured = capsys.readouterr()
    assert "error: no trial of study 'tiny_study' completed; trial 0 FAIL: RuntimeError: injected fault" in captured.err
    log = "results/optuna/tiny_study/sweep.log"
    assert f"trial 1 FAIL (RuntimeError: injected fault; traceback in {log}) (no trial completed yet)" in captured.err
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]  # not pruned, and not retried
    rows = list(csv.DictReader((_study_dir(tmp_path) / "trials.csv").open()))
    assert [r["failed_because"] for r in rows] == ["RuntimeError: injected fault"] * 2


def test_a_sweep_whose_every_trial_was_pruned_exits_1(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = {"model.type": {"type": "categorical", "choices": ["mlp", "attention"]}}
    config = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, search_space=space, n_trials=1)
    (tmp_path / "results" / "optuna").mkdir(parents=True)
    study = optuna.create_study(study_name="tiny_study", storage=default_url("tiny_study"), direction="maximize")
    study.enqueue_trial({"model.type": "attention"})
    overrides = ["--set", "model.num_tokens=8", "--set", "model.num_heads=3"]  # hidden_dim 32 % 3 heads
    assert cli.main(["tune", str(config), *overrides]) == 1
    err = capsys.readouterr().err
    assert "no trial of study 'tiny_study' completed; trial 0 PRUNED: BadInput: " in err and "num_heads 3" in err


@pytest.mark.slow
def test_each_finished_trial_logs_a_progress_line(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, n_trials=2, training={"num_epochs": 2})
    assert cli.main(["tune", str(config)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    assert [line.split()[:3] for line in lines] == [["trial", "0", "COMPLETE"], ["trial", "1", "COMPLETE"]]
    best = optuna.load_study(study_name="tiny_study", storage=default_url("tiny_study")).best_trial
    assert re.fullmatch(r"trial 1 COMPLETE rsum=\d+\.\d\d \(best \d+\.\d\d, trial \d\)", lines[1])
    assert f"(best {best.value:.2f}, trial {best.number})" in lines[1]
