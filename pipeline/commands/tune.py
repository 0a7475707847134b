"""`xalign tune OPTUNA_CONFIG [--n-trials N] [--timeout S] [--storage URL] [--workers N] [--set key=value ...]`

A resumable Optuna sweep over experiment configs. The study lives in `results/optuna/<study>.db`
(SQLite, under the working directory) or at `--storage URL`; rerunning the same command after a crash
or `kill -9` continues until the study holds `n_trials` finished (complete or pruned) trials, and a
trial the dead process left RUNNING is failed by its heartbeat and retried. `--workers N` runs N
processes on the study; more machines can join with the same `--storage`. `--set` overrides the base
experiment config (e.g. `data.cache=...`), a head config or a backbone config. Writes
`results/optuna/<study>/`: best_config.yaml (run it with `xalign train`, or `xalign backbone-train` for
a backbone base config), trials.csv, optimization_history.png, param_importances.png, summary.json, and
sweep.log (the traceback of each trial a code error failed). Reports a line per finished trial on stderr (a
failed trial's error in one line); a worker process that dies is replaced. Exits 1 when no trial completed
(naming the first failed or pruned trial's reason), or when workers died before the study was done.
"""

import argparse
import sys
from pathlib import Path

from encoding.errors import BadInput
from pipeline.tuning.settings import load_settings
from pipeline.tuning.storage import default_url
from pipeline.tuning.sweep import run_sweep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign tune", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("config", type=Path, help="optuna config YAML (see optuna_configs/)")
    p.add_argument("--n-trials", type=int, help="finished trials the study should hold (default: the config's)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///results/optuna/<study>.db)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine sharing the study")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(args.config, args.overrides)
    n_trials = settings.n_trials if args.n_trials is None else args.n_trials
    timeout = settings.timeout if args.timeout is None else args.timeout
    if n_trials < 1 or args.workers < 1 or timeout is not None and timeout <= 0:
        raise BadInput("--n-trials and --workers must be at least 1, --timeout positive")
    summary = run_sweep(settings, args.storage or default_url(settings.study_name), n_trials, timeout, args.workers)
    report(summary, "backbone-train" if settings.backbone else "train")
    if summary["problem"]:
        print(f"error: {summary['problem']}", file=sys.stderr)
        return 1
    return 0


def report(summary: dict, command: str = "train") -> None:
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
        print(f"train it: xalign {command} {summary['best_config']}")
    for name, reason in summary["plots_skipped"].items():
        print(f"skipped {name}: {reason}")
    print(f"wrote {summary['summary_path'].parent}")
