"""Two processes popping enqueued trials from one SQLite study never get the same trial."""

import multiprocessing

import optuna
import pytest
from tune_support import ask_and_tell, write_optuna_config

from pipeline.tuning.settings import load_settings
from pipeline.tuning.storage import create_study


@pytest.mark.slow
def test_two_processes_never_pop_the_same_enqueued_trial(synthetic_cache, tmp_path):
    settings = load_settings(write_optuna_config(tmp_path / "tune.yaml", synthetic_cache))
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = create_study(url, settings)
    for x in range(200):
        study.enqueue_trial({"x": x})
    context = multiprocessing.get_context("spawn")
    numbers = context.Queue()
    processes = [context.Process(target=ask_and_tell, args=(settings, url, 100, numbers)) for _ in range(2)]
    for process in processes:
        process.start()
    asked = [numbers.get(timeout=60) for _ in processes]
    for process in processes:
        process.join()
    assert [process.exitcode for process in processes] == [0, 0]
    assert not set(asked[0]) & set(asked[1])
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials())
