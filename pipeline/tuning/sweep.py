"""A whole sweep: the study, its worker processes, a line per finished trial, the artifacts, and a summary
with the per-trial overhead and, when the sweep did not succeed, the `problem` (no trial completed, or
workers died before the study was done)."""

import logging
import time
from pathlib import Path

from optuna.trial import TrialState

from encoding.errors import BadInput
from encoding.fingerprints import sha256_json
from pipeline.runs import provenance
from pipeline.tuning.artifacts import write_plots, write_summary, write_tables
from pipeline.tuning.objective import FAILED_BECAUSE
from pipeline.tuning.processes import Workers
from pipeline.tuning.progress import Progress
from pipeline.tuning.settings import TuneSettings
from pipeline.tuning.storage import create_study, safe_url
from pipeline.tuning.worker import count_finished, run_worker

log = logging.getLogger(f"xalign.{__name__}")


def run_sweep(settings: TuneSettings, url: str, n_trials: int, timeout: float | None, workers: int) -> dict:
    """Run `workers` workers on the study until it holds `n_trials` finished trials, then write the artifacts.
    Returns the summary written to summary.json, plus that file's path under `summary_path`."""
    study = create_study(url, settings)  # schema and study exist before any worker starts
    bind_study(study, settings, url)
    log.info(f"study '{settings.study_name}' ({safe_url(url)}): {count_finished(study)} of {n_trials} trials finished")
    start, progress = time.perf_counter(), Progress(settings, study)
    if workers == 1:
        stats, lost = [run_worker(settings, url, n_trials, timeout, callbacks=(progress,))], 0
    else:
        pool = Workers(settings, url, n_trials, timeout, workers)
        stats, lost = pool.run(study, progress), pool.lost
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
        "workers_lost": lost,
        "problem": problem(study, n_trials, lost),
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


def problem(study, n_trials: int, lost: int) -> str | None:
    """Why the sweep failed, or None: no trial completed (with the first failed or pruned trial's reason), or
    workers died before the study held `n_trials` finished trials."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        failed = [t for t in trials if FAILED_BECAUSE in t.user_attrs] or [
            t for t in trials if t.state == TrialState.PRUNED
        ]
        if not failed:
            return f"no trial of study '{study.study_name}' completed"
        first = failed[0]
        reason = first.user_attrs.get(FAILED_BECAUSE, first.user_attrs.get("pruned_because", "pruned"))
        return f"no trial of study '{study.study_name}' completed; trial {first.number} {first.state.name}: {reason}"
    finished = count_finished(study)
    if lost and finished < n_trials:
        return (
            f"{lost} worker process(es) died and the study holds {finished} of {n_trials} finished trials; "
            "rerun the same command to continue"
        )
    return None


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
