"""The snapshot pruner decides exactly as the median pruner it wraps, on the trials of its snapshot."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline.tuning.algorithms import build_pruner
from pipeline.tuning.pruning import SnapshotPruner


def _finished(values_per_step: list[float], state=TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state,
        value=max(values_per_step) if state == TrialState.COMPLETE else None,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        intermediate_values=dict(enumerate(values_per_step)),
    )


@pytest.mark.parametrize("options", [{}, {"n_warmup_steps": 2}, {"n_startup_trials": 2, "interval_steps": 2}])
def test_same_decisions_as_the_median_pruner(options):
    study = optuna.create_study(direction="maximize")
    for values in ([1, 2, 3, 4, 5], [2, 4, 6, 8, 9], [0, 1, 1, 2, 2], [3, 3, 3, 3, 3]):
        study.add_trial(_finished(values))
    study.add_trial(_finished([9, 9], TrialState.PRUNED))
    reference, snapshot = optuna.pruners.MedianPruner(**options), SnapshotPruner(optuna.pruners.MedianPruner(**options))
    for running_values in ([0, 0, 0, 0, 0], [5, 5, 5, 5, 5], [1, 2, 4, 5, 9]):
        trial = study.ask({"x": FloatDistribution(0, 1)})
        decisions = []
        for step, value in enumerate(running_values):
            trial.report(value, step)
            frozen = study._storage.get_trial(trial._trial_id)
            decisions.append((reference.prune(study, frozen), snapshot.prune(study, frozen)))
        assert all(a == b for a, b in decisions), decisions
        study.tell(trial, state=TrialState.PRUNED)


def test_snapshot_is_refreshed_for_each_trial_and_after_refresh_seconds():
    study = optuna.create_study(direction="maximize")
    pruner = SnapshotPruner(optuna.pruners.MedianPruner(n_startup_trials=1), refresh_seconds=3600)
    first = study.ask({"x": FloatDistribution(0, 1)})
    first.report(0.0, 0)
    assert not pruner.prune(study, study._storage.get_trial(first._trial_id))  # no completed trial to compare with
    study.add_trial(_finished([10.0]))
    assert not pruner.prune(study, study._storage.get_trial(first._trial_id))  # same trial: snapshot kept
    pruner.refresh_seconds = 0
    assert pruner.prune(study, study._storage.get_trial(first._trial_id))  # re-read: 0 is below the median 10
    study.tell(first, state=TrialState.PRUNED)

    pruner.refresh_seconds = 3600
    second = study.ask({"x": FloatDistribution(0, 1)})
    second.report(20.0, 0)
    assert not pruner.prune(study, study._storage.get_trial(second._trial_id))
    study.add_trial(_finished([30.0]))
    study.add_trial(_finished([40.0]))
    third = study.ask({"x": FloatDistribution(0, 1)})
    third.report(20.0, 0)
    assert pruner.prune(study, study._storage.get_trial(third._trial_id))  # a new trial re-reads: median is 30


def test_only_percentile_pruners_are_wrapped():
    assert isinstance(build_pruner({"type": "median"}), SnapshotPruner)
    assert isinstance(build_pruner({"type": "hyperband"}), optuna.pruners.HyperbandPruner)
    assert isinstance(build_pruner({"type": "none"}), optuna.pruners.NopPruner)
