"""The sweep objective: one trial trains the sampled head pair on the tuning split and scores it on val.

The cache splits are loaded once, when the objective is built (once per worker process). Every epoch
reports the metric to the trial and asks the pruner. A NaN/inf training loss, or a combination of
values the heads or losses refuse, ends the trial as PRUNED: it counts as finished, TPE learns to
avoid the region, and the study goes on; the reason is in the trial's user attrs.
"""

import os
import socket
import time
from dataclasses import replace
from pathlib import Path

import optuna

from encoding import cache
from encoding.errors import BadInput
from pipeline.data import load_splits
from pipeline.engine import NonFiniteLoss, Trainer
from pipeline.tuning.algorithms import METRICS
from pipeline.tuning.settings import TuneSettings


def resolve_train_split(cache_dir: Path, wanted: str, fallback: str) -> str:
    """`wanted` (the tuning subset) when splits.json has it non-empty, else `fallback` (with a notice)."""
    splits = cache.read_splits(cache_dir)
    if splits.get(wanted):
        return wanted
    print(
        f"note: {Path(cache_dir) / cache.SPLITS} has no '{wanted}' images; trials train on '{fallback}' "
        f"(`xalign split {cache_dir} --tuning N` makes a smaller, faster tuning subset)"
    )
    return fallback


class Objective:
    """`objective(trial)` → the best validation metric over the trial's epochs.

    `epoch_seconds` accumulates the time spent in training epochs (train + validation), so callers
    can measure the per-trial overhead around them.
    """

    def __init__(self, settings: TuneSettings):
        self.settings = settings
        self.metric = METRICS.get(settings.metric, key="metric")
        data = settings.base["data"]
        start = time.perf_counter()
        self.train_split = resolve_train_split(Path(data["cache"]), settings.train_split, data["train_split"])
        splits = load_splits(Path(data["cache"]), list(dict.fromkeys([self.train_split, data["val_split"]])))
        self.train, self.val = splits[self.train_split], splits[data["val_split"]]
        self.splits = (self.train, self.val)
        Trainer(settings.experiment({}), *self.splits)  # torch's one-off lazy initialisation
        self.setup_seconds = time.perf_counter() - start
        self.epoch_seconds = 0.0
        self.better = max if settings.direction == "maximize" else min

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:  # a combination the heads or losses refuse (e.g. a width that does not split into heads)
            config = self.settings.experiment(self.settings.space.sample(trial))
            trial.set_user_attr("config", config.to_dict())
            trainer = Trainer(replace(config, data=replace(config.data, train_split=self.train_split)), *self.splits)
        except BadInput as err:
            trial.set_user_attr("invalid_config", str(err))
            raise optuna.TrialPruned(f"invalid combination: {err}") from err
        scores = []

        def on_epoch_end(epoch: int, record: dict) -> None:
            self.epoch_seconds += record["seconds"]
            scores.append(self.metric(record))
            trial.report(scores[-1], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.settings.metric} {scores[-1]:.2f}")

        try:
            trainer.run(on_epoch_end)
        except NonFiniteLoss as err:
            trial.set_user_attr("non_finite_loss", str(err))
            raise optuna.TrialPruned(f"non-finite loss: {err}") from err
        best = self.better(scores)
        trial.set_user_attr("best_epoch", scores.index(best))
        trial.set_user_attr("epochs_run", len(scores))
        return best
