"""One worker process of a sweep: runs trials until the study holds `n_trials` finished ones.

Finished means COMPLETE or PRUNED, or FAILed with the objective's error recorded (`TrialError`: an error
that would recur, so it is not retried), counted in the storage, so a rerun after a crash continues where
the study stands, and any number of workers (processes or machines) share the count. A trial whose
worker died is failed by the heartbeat with no error recorded: it does not count, its retry runs instead.
A trial that fails on an unexpected exception has its traceback appended to the study's sweep.log; optuna's
own per-trial log lines are silenced while trials run (the sweep reports each trial in one line: `Progress`).
A worker starts a trial only while finished + running < n_trials; when the running ones belong to others it
waits, failing stale trials (heartbeat) so their retries are picked up. Two workers racing for the
last slot are settled by trial number: the later one is failed as surplus before it trains.
The sampler is built once the study is open, seeded by the worker index and the number of trials the
study already holds (`algorithms.sampler_seed`), so a rerun draws new parameter sets instead of
replaying the earlier ones.
"""

import contextlib
import datetime
import time
import warnings
from dataclasses import asdict, dataclass, field

import optuna
import torch
from optuna.trial import TrialState

from pipeline.tuning.algorithms import build_pruner, build_sampler
from pipeline.tuning.artifacts import ImprovementWriter, log_failure
from pipeline.tuning.objective import FAILED_BECAUSE, Objective, TrialError
from pipeline.tuning.settings import TuneSettings
from pipeline.tuning.storage import create_study


class SurplusTrial(Exception):
    """A trial started after the study already had enough finished or running trials."""


@dataclass
class WorkerStats:
    """Timing of one worker: `trial_seconds[i]` is trial i's wall time, `epoch_seconds[i]` its epochs' share."""

    setup_seconds: float = 0.0
    trial_seconds: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def is_finished(trial: optuna.trial.FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL with the objective's error recorded (a heartbeat failure is retried instead)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and FAILED_BECAUSE in trial.user_attrs
    )


def count_finished(study: optuna.Study) -> int:
    return sum(map(is_finished, study.get_trials(deepcopy=False)))


def claims_before(study: optuna.Study, number: int) -> int:
    """Finished trials, plus running trials numbered below `number`."""
    return sum(
        is_finished(t) or (t.state == TrialState.RUNNING and t.number < number)
        for t in study.get_trials(deepcopy=False)
    )


def grid_exhausted(sampler: optuna.samplers.BaseSampler, study: optuna.Study) -> bool:
    """True once a grid sampler has handed out every point (it would repeat points from then on)."""
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


def study_done(study: optuna.Study, n_trials: int, sampler: optuna.samplers.BaseSampler) -> bool:
    """The study holds `n_trials` finished trials, or its grid has no point left."""
    return count_finished(study) >= n_trials or grid_exhausted(sampler, study)


def fail_orphaned_trials(study: optuna.Study, grace_period: int) -> None:
    """Fail RUNNING trials that no worker ever started (no `worker` attribute) after `grace_period` seconds:
    a process killed between creating a trial and its first heartbeat leaves one that no heartbeat check sees."""
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if "worker" not in trial.user_attrs and started is not None and (now - started).total_seconds() > grace_period:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


@contextlib.contextmanager
def optuna_quiet():
    """Optuna's logging at ERROR while inside: its per-trial lines (a failure's traceback included) are off."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def run_worker(
    settings: TuneSettings,
    url: str,
    n_trials: int,
    timeout: float | None,
    worker: int = 0,
    threads: int | None = None,
    callbacks: tuple = (),
) -> dict:
    """Run trials of the shared study until it has `n_trials` finished or `timeout` seconds pass.

    `threads` caps torch's CPU threads, so N workers on one machine share its cores instead of oversubscribing;
    `callbacks` are study callbacks called after each trial, besides the one writing the best config.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    study = create_study(url, settings, pruner=build_pruner(settings.pruner))
    trials = len(study.get_trials(deepcopy=False))
    study.sampler = build_sampler(settings.sampler, settings.space, worker, trials)
    objective = Objective(settings)
    stats = WorkerStats(setup_seconds=objective.setup_seconds)
    callbacks = [ImprovementWriter(settings), *callbacks]
    poll = min(1.0, settings.heartbeat_interval / 2)
    deadline = None if timeout is None else time.monotonic() + timeout

    def guarded(trial: optuna.Trial) -> float:
        if claims_before(study, trial.number) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the study already has {n_trials} trials")
        try:
            return objective(trial)
        except TrialError as err:
            log_failure(settings.study_name, trial.number, err.__cause__ or err)
            raise

    while deadline is None or time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        finished = sum(map(is_finished, trials))
        if finished >= n_trials or grid_exhausted(study.sampler, study):
            break
        if finished + sum(t.state == TrialState.RUNNING for t in trials) >= n_trials:
            time.sleep(poll)  # the others' trials finish, or go stale and come back as retries
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            fail_orphaned_trials(study, settings.grace_period)
            continue
        start, epochs_before = time.perf_counter(), objective.epoch_seconds
        with optuna_quiet():
            study.optimize(guarded, n_trials=1, callbacks=callbacks, catch=(SurplusTrial, TrialError))
        stats.trial_seconds.append(time.perf_counter() - start)
        stats.epoch_seconds.append(objective.epoch_seconds - epochs_before)
    return stats.to_dict()
