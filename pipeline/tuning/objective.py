"""The sweep objective: one trial trains the sampled head pair (or backbone) on the tuning split and scores
it on val.

The cache splits are loaded once, when the objective is built (once per worker process). Every epoch
reports the metric to the trial and asks the pruner. A combination of values the config or a head refuses,
a NaN/inf loss (both `BadInput`), running out of device memory, and a trial in which no epoch ran end as
PRUNED with the reason in the `pruned_because` user attr: it counts as finished, TPE learns to avoid the
region, and the sweep goes on. Any other exception is a fault, not a property of the values: the trial
ends as FAIL with the error in its `failed_because` user attr (`TrialError`), and the sweep goes on.
`applied_options` records the head/loss keys the trial applied."""

import logging
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

import optuna
import torch

from encoding import cache
from encoding.cache import Cache, open_cache
from encoding.errors import BadInput
from pipeline.data.split_tensors import load_splits
from pipeline.tuning.algorithms import METRICS
from pipeline.tuning.settings import TuneSettings

log = logging.getLogger(f"xalign.{__name__}")
FAILED_BECAUSE = "failed_because"
PRUNABLE = (BadInput, torch.OutOfMemoryError)  # the sampled values' doing: the trial is pruned


class TrialError(Exception):
    """A trial raised an unexpected exception: the trial fails with it recorded, the sweep goes on."""


def resolve_train_split(opened: Cache, wanted: str, fallback: str) -> str:
    """`wanted` (the tuning subset) when the cache's splits.json has it non-empty, else `fallback` (with a notice)."""
    if opened.splits.get(wanted):
        return wanted
    log.info(
        f"note: {opened.dir / cache.SPLITS} has no '{wanted}' images; trials train on '{fallback}' "
        f"(`xalign split {opened.dir} --tuning N` makes a smaller, faster tuning subset)"
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
        base, _ = settings.experiment({})
        data, start = base.data, time.perf_counter()
        opened = open_cache(Path(data.cache))  # read once per worker process: metadata, shard hashes, splits
        self.train_split = resolve_train_split(opened, settings.train_split, data.train_split)
        splits = load_splits(opened, list(dict.fromkeys([self.train_split, data.val_split])))
        self.train, self.val = splits[self.train_split], splits[data.val_split]
        self.splits = (self.train, self.val)
        settings.trainer(base)(base, *self.splits)  # torch's one-off lazy initialisation
        self.setup_seconds = time.perf_counter() - start
        self.epoch_seconds = 0.0
        self.better = max if settings.direction == "maximize" else min

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        scores = []

        def on_epoch_end(epoch: int, record: dict) -> None:
            self.epoch_seconds += record["seconds"]
            scores.append(self.metric(record))
            trial.report(scores[-1], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.settings.metric} {scores[-1]:.2f}")

        try:
            config, applied = self.settings.experiment(self.settings.space.sample(trial))
            trial.set_user_attr("config", config.to_dict())
            trial.set_user_attr("applied_options", ",".join(applied))
            trainer = self.settings.trainer(config)(
                replace(config, data=replace(config.data, train_split=self.train_split)), *self.splits
            )
            trainer.log_epochs = False
            trainer.run(on_epoch_end)
            if not scores:
                raise optuna.TrialPruned("no epoch ran, so there is no score")
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("pruned_because", str(pruned))
            raise
        except PRUNABLE as err:
            reason = f"{type(err).__name__}: {err}"
            trial.set_user_attr("pruned_because", reason)
            raise optuna.TrialPruned(reason) from err
        except Exception as err:  # a fault fails this trial, never the sweep
            reason = f"{type(err).__name__}: {err}"
            trial.set_user_attr(FAILED_BECAUSE, reason)
            raise TrialError(reason) from err
        best = self.better(scores)
        trial.set_user_attr("best_epoch", scores.index(best))
        trial.set_user_attr("epochs_run", len(scores))
        return best
