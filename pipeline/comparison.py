"""A table of finished runs for `xalign compare`: each run's test metrics, key settings and cost side.

Each row: the run's test metrics (metrics.json), key settings (config.yaml: head, loss, output
dim, learning rate, batch size) and the cost side (run_info.json: trainable parameters, training
wall time, inference time per 1,000 queries, peak memory).
"""

import json
from pathlib import Path

import yaml

from encoding.errors import BadInput

# column → (source file, path of keys, format)
COLUMNS = {
    "head": ("config", ("model", "type"), "{}"),
    "loss": ("config", ("loss", "type"), "{}"),
    "output_dim": ("config", ("model", "output_dim"), "{}"),
    "lr": ("config", ("training", "learning_rate"), "{:g}"),
    "batch": ("config", ("training", "batch_size"), "{}"),
    "split": ("metrics", ("split",), "{}"),
    "i2t R@1": ("metrics", ("i2t", "R@1"), "{:.1f}"),
    "i2t R@5": ("metrics", ("i2t", "R@5"), "{:.1f}"),
    "i2t R@10": ("metrics", ("i2t", "R@10"), "{:.1f}"),
    "t2i R@1": ("metrics", ("t2i", "R@1"), "{:.1f}"),
    "t2i R@5": ("metrics", ("t2i", "R@5"), "{:.1f}"),
    "t2i R@10": ("metrics", ("t2i", "R@10"), "{:.1f}"),
    "rsum": ("metrics", ("rsum",), "{:.1f}"),
    "zero-shot top-1": ("metrics", ("zeroshot", "top1"), "{:.1f}"),
    "params": ("info", ("trainable_parameters",), "{:,}"),
    "train s": ("info", ("train_seconds",), "{:.1f}"),
    "ms / 1k queries": ("info", ("inference_ms_per_1000_queries",), "{:.1f}"),
    "peak MB": ("info", ("peak_memory_mb",), "{:.0f}"),
}


def _lookup(source: dict, keys: tuple[str, ...]):
    for key in keys:
        if not isinstance(source, dict) or key not in source:
            return None
        source = source[key]
    return source


def read_run(run_dir: Path) -> dict | None:
    """{'run', 'config', 'metrics', 'info'} of a run directory, or None without metrics.json."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        return None
    files = {"metrics": "metrics.json", "info": "run_info.json", "config": "config.yaml"}
    run = {"run": run_dir.name}
    for name, file in files.items():
        path = run_dir / file
        try:
            run[name] = (
                (yaml.safe_load if file.endswith(".yaml") else json.loads)(path.read_text()) if path.is_file() else {}
            )
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise BadInput(f"{path}: cannot be read ({err})") from err
    return run


def column_formats(header: list[str]) -> list[str]:
    """Formats of the columns `table_rows` returned (the run name first)."""
    return ["{}"] + [COLUMNS[name][2] for name in header[1:]]


def table_rows(runs: list[dict]) -> tuple[list[str], list[list]]:
    """(header, rows of raw values) sorted by rsum, best first; columns no run has are dropped."""
    runs = sorted(runs, key=lambda r: -(_lookup(r["metrics"], ("rsum",)) or float("-inf")))
    values = [[_lookup(r[src], keys) for src, keys, _ in COLUMNS.values()] for r in runs]
    keep = [i for i in range(len(COLUMNS)) if any(row[i] is not None for row in values)]
    header = ["run"] + [list(COLUMNS)[i] for i in keep]
    return header, [[r["run"]] + [row[i] for i in keep] for r, row in zip(runs, values)]
