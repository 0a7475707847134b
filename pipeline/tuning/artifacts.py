"""What a sweep leaves in `results/optuna/<study>/`: `best_config.yaml` (runnable by `xalign train`),
`trials.csv`, `optimization_history.png`, `param_importances.png`, `summary.json`, and `sweep.log`, the
traceback of each trial that failed on an unexpected exception.

The best config and the CSV are rewritten whenever a trial improves on the best (the plots at most
every five minutes, as drawing them costs about a second); everything is written again at the end.
Files are replaced atomically, so concurrent workers never leave a torn file; each failure is appended to
the log in one write, so concurrent workers never interleave theirs.
"""

import csv
import datetime
import io
import json
import os
import socket
import time
import traceback
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from encoding.atomic import write_atomic  # noqa: E402
from pipeline.tuning.settings import TuneSettings  # noqa: E402
from pipeline.tuning.storage import artifacts_dir  # noqa: E402

PLOT_INTERVAL_S = 300
SWEEP_LOG = "sweep.log"
ATTR_COLUMNS = ("best_epoch", "epochs_run", "worker", "pruned_because", "failed_because", "applied_options", "surplus")


def best_config(study: optuna.Study, settings: TuneSettings) -> dict | None:
    """The best trial's experiment config, named `<study>_best`, training on the base config's train split."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    return {**best.user_attrs["config"], "name": f"{settings.study_name}_best"}


def trials_csv(trials: list[FrozenTrial]) -> str:
    """One row per trial: number, state, value, duration, every parameter, and the objective's user attrs."""
    params = sorted({name for t in trials for name in t.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", "value", "duration_s", "datetime_start", *params, *ATTR_COLUMNS])
    for t in trials:
        duration = t.duration.total_seconds() if t.duration is not None else ""
        writer.writerow(
            [t.number, t.state.name, "" if t.value is None else t.value, duration, t.datetime_start or ""]
            + [t.params.get(name, "") for name in params]
            + [t.user_attrs.get(name, "") for name in ATTR_COLUMNS]
        )
    return out.getvalue()


def write_tables(study: optuna.Study, settings: TuneSettings) -> Path | None:
    """best_config.yaml (when a trial completed) and trials.csv; returns the best config's path."""
    out = artifacts_dir(settings.study_name)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "trials.csv", trials_csv(study.get_trials(deepcopy=False)))
    config = best_config(study, settings)
    if config is None:
        return None
    write_atomic(out / "best_config.yaml", yaml.safe_dump(config, sort_keys=False))
    return out / "best_config.yaml"


def draw(plot, study: optuna.Study, params: set[str] | None):
    """The 8 x 5 in figure of an optuna matplotlib `plot` (over `params` when given); an axis of trial numbers
    gets whole-number ticks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot(study) if params is None else plot(study, params=sorted(params))
    if axes.get_xlabel() == "Trial":
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.figure.set_size_inches(8, 5)
    return axes.figure


def write_plots(study: optuna.Study, settings: TuneSettings) -> dict[str, str]:
    """The optimisation-history and parameter-importance PNGs; returns {file: reason} for plots skipped."""
    out, skipped = artifacts_dir(settings.study_name), {}
    out.mkdir(parents=True, exist_ok=True)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {name for t in completed for name in t.params if len({str(u.params.get(name)) for u in completed}) > 1}
    plots = {
        "optimization_history.png": (optuna.visualization.matplotlib.plot_optimization_history, 1, None),
        "param_importances.png": (optuna.visualization.matplotlib.plot_param_importances, 2, varied),
    }
    for name, (plot, needed, params) in plots.items():
        if len(completed) < needed or params is not None and not params:
            skipped[name] = f"needs {needed} completed trials" + (
                " with varied parameters" if params is not None else ""
            )
            continue
        figure = draw(plot, study, params)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        write_atomic(out / name, buffer.getvalue())
    return skipped


def write_summary(settings: TuneSettings, summary: dict) -> Path:
    path = artifacts_dir(settings.study_name) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(summary, indent=2, default=str))
    return path


def sweep_log(study_name: str) -> Path:
    return artifacts_dir(study_name) / SWEEP_LOG


def log_failure(study_name: str, number: int, err: BaseException) -> Path:
    """Append trial `number`'s failure (time, worker, traceback of `err`) to the study's sweep.log; returns its path."""
    path = sweep_log(study_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    header = f"{stamp} trial {number} failed (worker {socket.gethostname()}:{os.getpid()})\n"
    text = header + "".join(traceback.format_exception(err)) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path


class ImprovementWriter:
    """Study callback: rewrites best_config.yaml and trials.csv each time a trial becomes the best, and the
    plots too when the last ones are `plot_interval` seconds old (a plot takes about a second, a demo trial two)."""

    def __init__(self, settings: TuneSettings, plot_interval: float = PLOT_INTERVAL_S):
        self.settings, self.plot_interval = settings, plot_interval
        self.plotted_at = time.monotonic()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE or study.best_trial.number != trial.number:
            return
        write_tables(study, self.settings)
        if time.monotonic() - self.plotted_at >= self.plot_interval:
            write_plots(study, self.settings)
            self.plotted_at = time.monotonic()
