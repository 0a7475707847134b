"""One line per finished trial while a sweep runs: `trial 3 COMPLETE rsum=123.40 (best 130.10, trial 1)`.

`Progress` reads the study's storage, so it reports every worker's trials: it is a study callback of the
sweep's only worker, and the parent of a parallel sweep calls it while it watches its worker processes.
A trial that failed on an unexpected exception gets one line naming the error and the log holding its traceback.
"""

import logging

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.tuning.artifacts import sweep_log
from pipeline.tuning.objective import FAILED_BECAUSE
from pipeline.tuning.settings import TuneSettings

log = logging.getLogger(f"xalign.{__name__}")
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class Progress:
    """Logs the trials that ended since the last call (the ones ended before `study` was opened are known)."""

    def __init__(self, settings: TuneSettings, study: optuna.Study):
        self.metric, self.better = settings.metric, max if settings.direction == "maximize" else min
        self.log_path = sweep_log(settings.study_name)
        self.seen = {t.number for t in study.get_trials(deepcopy=False, states=ENDED)}

    def __call__(self, study: optuna.Study, _trial: FrozenTrial | None = None) -> None:
        trials = study.get_trials(deepcopy=False, states=ENDED)
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        for trial in sorted((t for t in trials if t.number not in self.seen), key=lambda t: t.number):
            self.seen.add(trial.number)
            if not trial.user_attrs.get("surplus"):
                log.info(f"trial {trial.number} {trial.state.name} {self.outcome(trial)} {self.best(completed)}")

    def outcome(self, trial: FrozenTrial) -> str:
        """The value of a completed trial, else why it ended."""
        if trial.state == TrialState.COMPLETE:
            return f"{self.metric}={trial.value:.2f}"
        if trial.state == TrialState.PRUNED:
            return f"({trial.user_attrs.get('pruned_because', 'pruned')})"
        if FAILED_BECAUSE in trial.user_attrs:
            return f"({trial.user_attrs[FAILED_BECAUSE]}; traceback in {self.log_path})"
        return "(its worker stopped sending heartbeats)"

    def best(self, completed: list[FrozenTrial]) -> str:
        if not completed:
            return "(no trial completed yet)"
        best = self.better(completed, key=lambda t: t.value)
        return f"(best {best.value:.2f}, trial {best.number})"
