"""One worker process of a sweep: runs trials until the study holds `n_trials` finished ones.

Finished means COMPLETE or PRUNED, counted in the storage, so a rerun after a crash continues where
the study stands, and any number of workers (processes or machines) share the count. A worker
starts a trial only while finished + running < n_trials; when the running ones belong to others it
waits, failing stale trials (heartbeat) so their retries are picked up. Two workers racing for the
last slot are settled by trial number: the later one is failed as surplus before it trains.
The sampler is built once the study is open, seeded by the worker index and the number of trials the
study already holds (`algorithms.sampler_seed`), so a rerun draws new parameter sets instead of
replaying the earlier ones.
"""

import datetime
import time
import warnings
from dataclasses import asdict, dataclass, field

import optuna
import torch
from optuna.trial import TrialState

from pipeline.tuning.algorithms import build_pruner, build_sampler
from pipeline.tuning.artifacts import ImprovementWriter
from pipeline.tuning.objective import Objective
from pipeline.tuning.settings import TuneSettings
from pipeline.tuning.storage import create_study

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def claims_before(study: optuna.Study, number: int) -> int:
    """Finished trials, plus running trials numbered below `number`."""
    return sum(
        t.state in FINISHED or (t.state == TrialState.RUNNING and t.number < number)
        for t in study.get_trials(deepcopy=False)
    )


def grid_exhausted(sampler: optuna.samplers.BaseSampler, study: optuna.Study) -> bool:
    """True once a grid sampler has handed out every point (it would repeat points from then on)."""
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


def fail_orphaned_trials(study: optuna.Study, grace_period: int) -> None:
    """Fail RUNNING trials that no worker ever started (no `worker` attribute) after `grace_period` seconds:
    a process killed between creating a trial and its first heartbeat leaves one that no heartbeat check sees."""
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if "worker" not in trial.user_attrs and started is not None and (now - started).total_seconds() > grace_period:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def run_worker(
    settings: TuneSettings, url: str, n_trials: int, timeout: float | None, worker: int = 0, threads: int | None = None
) -> dict:
    """Run trials of the shared study until it has `n_trials` finished or `timeout` seconds pass.

    `threads` caps torch's CPU threads, so N workers on one machine share its cores instead of oversubscribing.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    study = create_study(url, settings, pruner=build_pruner(settings.pruner))
    trials = len(study.get_trials(deepcopy=False))
    study.sampler = build_sampler(settings.sampler, settings.space, worker, trials)
    objective = Objective(settings)
    stats = WorkerStats(setup_seconds=objective.setup_seconds)
    writer = ImprovementWriter(settings)
    poll = min(1.0, settings.heartbeat_interval / 2)
    deadline = None if timeout is None else time.monotonic() + timeout

    def guarded(trial: optuna.Trial) -> float:
        if claims_before(study, trial.number) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the study already has {n_trials} trials")
        return objective(trial)

    while deadline is None or time.monotonic() < deadline:
        counts = count_states(study)
        finished = sum(counts[s] for s in FINISHED)
        if finished >= n_trials or grid_exhausted(study.sampler, study):
            break
        if finished + counts[TrialState.RUNNING] >= n_trials:
            time.sleep(poll)  # the others' trials finish, or go stale and come back as retries
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            fail_orphaned_trials(study, settings.grace_period)
            continue
        start, epochs_before = time.perf_counter(), objective.epoch_seconds
        study.optimize(guarded, n_trials=1, callbacks=[writer], catch=(SurplusTrial,))
        stats.trial_seconds.append(time.perf_counter() - start)
        stats.epoch_seconds.append(objective.epoch_seconds - epochs_before)
    return stats.to_dict()
