"""A whole sweep: the study, its worker processes, the artifacts, and a summary with the per-trial overhead."""

import multiprocessing
import os
import time
from pathlib import Path

from optuna.trial import TrialState

from encoding.errors import BadInput
from encoding.fingerprints import sha256_json
from pipeline import provenance
from pipeline.tuning.artifacts import write_plots, write_summary, write_tables
from pipeline.tuning.settings import TuneSettings
from pipeline.tuning.storage import create_study, safe_url
from pipeline.tuning.worker import run_worker


def run_sweep(settings: TuneSettings, url: str, n_trials: int, timeout: float | None, workers: int) -> dict:
    """Run `workers` workers on the study until it holds `n_trials` finished trials, then write the artifacts.
    Returns the summary written to summary.json, plus that file's path under `summary_path`."""
    study = create_study(url, settings)  # schema and study exist before any worker starts
    bind_study(study, settings, url)
    print(f"study '{settings.study_name}' ({safe_url(url)}): {len(finished(study))} of {n_trials} trials finished")
    start = time.perf_counter()
    stats = run_workers(settings, url, n_trials, timeout, workers)
    summary = {
        "study": settings.study_name,
        "storage": safe_url(url),
        "metric": settings.metric,
        "direction": settings.direction,
        "n_trials": n_trials,
        "workers": workers,
        "wall_seconds": round(time.perf_counter() - start, 3),
        **{state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState},
        "overhead": overhead(stats),
    }
    best_path = write_tables(study, settings)
    summary["plots_skipped"] = write_plots(study, settings)
    if best_path is not None:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params, best_config=best_path)
    summary["summary_path"] = write_summary(settings, summary)
    return summary


def bind_study(study, settings: TuneSettings, url: str) -> None:
    """Record the cache and split fingerprints and the base config's hash in the study's user attributes;
    refuse (`BadInput`) a study of this name that was tuned on other ones: its trials would not compare."""
    described = provenance.describe(Path(settings.experiment({})[0].data.cache))
    wanted = {
        "cache_fingerprint": described["cache_fingerprint"],
        "splits_fingerprint": described["splits_fingerprint"],
        "base_config_sha256": sha256_json(settings.base),
    }
    stored = {key: study.user_attrs.get(key) for key in wanted}
    if all(value is None for value in stored.values()):
        for key, value in wanted.items():
            study.set_user_attr(key, value)
        return
    differing = [key for key in wanted if stored[key] != wanted[key]]
    if differing:
        details = "; ".join(f"{key} {str(stored[key])[:12]}, now {str(wanted[key])[:12]}" for key in differing)
        raise BadInput(
            f"study '{settings.study_name}' in {safe_url(url)} was tuned on other data or another base config "
            f"({details}); its trials would not compare with new ones: use a new study_name"
        )


def finished(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


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
