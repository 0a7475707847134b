"""`xalign tune OPTUNA_CONFIG [--n-trials N] [--timeout S] [--storage URL] [--workers N] [--set key=value ...]`

A resumable Optuna sweep over experiment configs. The study lives in `results/optuna/<study>.db`
(SQLite, under the working directory) or at `--storage URL`; rerunning the same command after a crash
or `kill -9` continues until the study holds `n_trials` finished (complete or pruned) trials, and a
trial the dead process left RUNNING is failed by its heartbeat and retried. `--workers N` runs N
processes on the study; more machines can join with the same `--storage`. `--set` overrides the base
experiment config (e.g. `data.cache=...`). Writes `results/optuna/<study>/`: best_config.yaml (run it
with `xalign train`), trials.csv, optimization_history.png, param_importances.png, summary.json.
"""

import argparse
import multiprocessing
import os
import time
from pathlib import Path

from optuna.trial import TrialState

from encoding.errors import BadInput
from pipeline.tuning.artifacts import write_plots, write_summary, write_tables
from pipeline.tuning.settings import TuneSettings, load_settings
from pipeline.tuning.storage import create_study, default_url, safe_url
from pipeline.tuning.worker import run_worker


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign tune", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("config", type=Path, help="optuna config YAML (see optuna_configs/)")
    p.add_argument("--n-trials", type=int, help="finished trials the study should hold (default: the config's)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///results/optuna/<study>.db)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine sharing the study")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def overhead(stats: list[dict]) -> dict:
    """Per-trial overhead: the share of trial wall time spent outside training epochs (sampling, model
    build, storage, pruning, artifacts), summed over all workers."""
    trial_s = sum(sum(s["trial_seconds"]) for s in stats)
    epoch_s = sum(sum(s["epoch_seconds"]) for s in stats)
    setup_s = sum(s["setup_seconds"] for s in stats)
    trials = sum(len(s["trial_seconds"]) for s in stats)
    return {
        "trials_timed": trials,
        "trial_seconds": round(trial_s, 4),
        "epoch_seconds": round(epoch_s, 4),
        "overhead_seconds_per_trial": round((trial_s - epoch_s) / trials, 4) if trials else None,
        "overhead_fraction": round(1 - epoch_s / trial_s, 4) if trial_s else None,
        "setup_seconds": round(setup_s, 4),
        "overhead_fraction_with_setup": round(1 - epoch_s / (trial_s + setup_s), 4) if trial_s else None,
    }


def run_workers(settings: TuneSettings, url: str, n_trials: int, timeout: float | None, workers: int) -> list[dict]:
    """Run the worker loop here (one worker) or in `workers` spawned processes."""
    if workers == 1:
        return [run_worker(settings, url, n_trials, timeout)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(settings, url, n_trials, timeout, k, threads) for k in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.starmap(run_worker, jobs)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(args.config, args.overrides)
    n_trials = settings.n_trials if args.n_trials is None else args.n_trials
    timeout = settings.timeout if args.timeout is None else args.timeout
    if n_trials < 1 or args.workers < 1 or timeout is not None and timeout <= 0:
        raise BadInput("--n-trials and --workers must be at least 1, --timeout positive")
    url = args.storage or default_url(settings.study_name)
    study = create_study(url, settings)  # schema and study exist before any worker starts
    print(f"study '{settings.study_name}' ({safe_url(url)}): {len(finished(study))} of {n_trials} trials finished")
    start = time.perf_counter()
    stats = run_workers(settings, url, n_trials, timeout, args.workers)
    summary = {
        "study": settings.study_name,
        "storage": safe_url(url),
        "metric": settings.metric,
        "direction": settings.direction,
        "n_trials": n_trials,
        "workers": args.workers,
        "wall_seconds": round(time.perf_counter() - start, 3),
        **{state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState},
        "overhead": overhead(stats),
    }
    best_path = write_tables(study, settings)
    summary["plots_skipped"] = write_plots(study, settings)
    if best_path is not None:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params, best_config=best_path)
    report(summary, write_summary(settings, summary))
    return 0


def finished(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def report(summary: dict, summary_path: Path) -> None:
    print(
        f"{summary['complete']} complete, {summary['pruned']} pruned, {summary['fail']} failed "
        f"({summary['n_trials']} wanted) in {summary['wall_seconds']:.1f}s"
    )
    cost = summary["overhead"]
    if cost["overhead_fraction"] is not None:
        print(
            f"per-trial overhead: {100 * cost['overhead_fraction']:.1f}% of trial time "
            f"({cost['overhead_seconds_per_trial']:.3f}s per trial over {cost['trials_timed']} trials; "
            f"setup (data load, warm-up) once per worker: {cost['setup_seconds']:.2f}s)"
        )
    if "best_value" in summary:
        print(f"best trial {summary['best_trial']}: {summary['metric']} {summary['best_value']:.2f}")
        for name, value in summary["best_params"].items():
            print(f"  {name} = {value}")
        print(f"train it: xalign train {summary['best_config']}")
    for name, reason in summary["plots_skipped"].items():
        print(f"skipped {name}: {reason}")
    print(f"wrote {summary_path.parent}")
