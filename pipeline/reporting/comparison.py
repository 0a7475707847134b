"""Rows of finished runs for `xalign compare`: what produced each number, the numbers, their cost.

Each row: the run's data and backbones (metrics.json `provenance`: dataset kind, cache directory name,
image and text backbone specs; for a backbone run, the towers it trained), key settings (config.yaml:
head, loss, output dim, learning rate, batch size), the evaluated split and its gallery size
(`num_images`/`num_captions`), its epochs (run_info.json: the best epoch and the epochs run, `7/10`, so
runs of different lengths are not compared unmarked), the test metrics and the cost side (run_info.json:
trainable parameters, training wall time, inference time per 1,000 queries, peak memory). A run without
provenance (older runs) has empty cells there, never guesses.

What is read: a directory holding metrics.json, or a `metrics*.json` file in a run directory; anything
else has a `skip_reason`. A run whose files cannot be read, or hold a text where a number belongs, is
refused by `read_run` as a whole (BadInput naming the file), so one broken run never half-fills a row.

Order: best rsum first, except that a run whose test gallery has fewer than `TINY_GALLERY` images is
ranked after every run with a real gallery (then by rsum among themselves). Recall at K over a few
dozen images is close to trivial, so a toy run must not top the table a reader skims; its gallery cell
carries a mark and the table a footnote.

Grouping (`group=True`): runs that differ only in `name` and `training.seed` form one row. The key is
the canonical JSON of the config without those two keys, the cache and split fingerprints (when
recorded: a run without them never groups with one that has them), and every other shown setting, so a
group row shows nothing that is not true of each of its runs. Metrics become mean and sample standard
deviation (ddof=1; none for one run), costs the mean, epochs their range (`5–9/10`). A group's run cell
lists the names when they are short, else their common prefix as a glob (`mlp-seed*`), else the first
name and how many more.
"""

import copy
import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from numbers import Real
from pathlib import Path

from encoding.errors import BadInput
from encoding.safe_load import load_json, load_yaml
from pipeline.reporting.tables import Style

TINY_GALLERY = 100
FOOTNOTE = f"test gallery under {TINY_GALLERY} images: recall at K is close to trivial"
FILES = {"metrics": "metrics.json", "info": "run_info.json", "config": "config.yaml"}


@dataclass(frozen=True)
class Column:
    """One logical column: where its value lives, how it is shown, and what kind it is.

    kind: `setting` (same across a group), `metric` (mean ± std), `cost` (mean), `epoch` (the runs' values:
    a range in the table, the mean in CSV), `fingerprint` (CSV only).
    """

    name: str
    source: str
    keys: tuple[str, ...]
    fmt: str = "{}"
    kind: str = "setting"
    then: Callable | None = None  # applied to a present value, e.g. a path → its directory name


def _dir_name(path) -> str:
    return Path(str(path)).name


def _short(fingerprint) -> str:
    return str(fingerprint)[:8]


def _metric(name: str, *keys: str) -> Column:
    return Column(name, "metrics", keys, "{:.1f}", "metric")


COLUMNS = [
    Column("dataset", "metrics", ("provenance", "dataset", "kind")),
    Column("cache", "metrics", ("provenance", "cache"), then=_dir_name),
    Column("image backbone", "towers", ("image",)),
    Column("text backbone", "towers", ("text",)),
    Column("head", "config", ("model", "type")),
    Column("loss", "config", ("loss", "type")),
    Column("output_dim", "config", ("model", "output_dim")),
    Column("lr", "config", ("training", "learning_rate"), "{:g}"),
    Column("batch", "config", ("training", "batch_size")),
    Column("split", "metrics", ("split",)),
    Column("rerank K", "metrics", ("rerank_k",)),
    *(_metric(f"{d} R@{k}", d, f"R@{k}") for d in ("i2t", "t2i") for k in (1, 5, 10)),
    _metric("rsum", "rsum"),
    _metric("zero-shot top-1", "zeroshot", "top1"),
    Column("params", "info", ("trainable_parameters",), "{:,.0f}", "cost"),
    Column("train s", "info", ("train_seconds",), "{:.1f}", "cost"),
    Column("ms / 1k queries", "info", ("inference_ms_per_1000_queries",), "{:.1f}", "cost"),
    Column("peak MB", "info", ("peak_memory_mb",), "{:.0f}", "cost"),
    Column("best epoch", "info", ("best_epoch",), "{:g}", "epoch", then=lambda index: index + 1),  # 0-based there
    Column("epochs", "info", ("epochs",), "{:g}", "epoch"),
    Column("cache fingerprint", "metrics", ("provenance", "cache_fingerprint"), kind="fingerprint", then=_short),
    Column("splits fingerprint", "metrics", ("provenance", "splits_fingerprint"), kind="fingerprint", then=_short),
]
GALLERY = (  # numbers, shown together as one "images/captions" cell
    Column("test images", "metrics", ("num_images",), "{:d}"),
    Column("test captions", "metrics", ("num_captions",), "{:d}"),
)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of a metric over a group's runs (std None for one run)."""

    mean: float
    std: float | None


@dataclass(frozen=True)
class Row:
    """One table row: its runs' names, the (images, captions) gallery and column name → value or Stat."""

    runs: tuple[str, ...]
    gallery: tuple
    cells: dict

    @property
    def tiny(self) -> bool:
        return self.gallery[0] is not None and self.gallery[0] < TINY_GALLERY


def _lookup(source, keys: tuple[str, ...]):
    for key in keys:
        if not isinstance(source, dict) or key not in source:
            return None
        source = source[key]
    return source


def _load(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = (load_yaml if path.suffix == ".yaml" else load_json)(path)
    if not isinstance(data, dict | None):
        raise BadInput(f"{path}: expected a mapping, found {type(data).__name__}")
    return data or {}


def skip_reason(path: Path) -> str | None:
    """Why `path` is not a run to compare (e.g. `results/README.md`, `results/optuna`), or None."""
    path = Path(path)
    if path.is_file():
        return None if fnmatch(path.name, "metrics*.json") else "not a run directory or a metrics*.json file"
    if not path.exists():
        return "does not exist"
    return None if (path / FILES["metrics"]).is_file() else f"no {FILES['metrics']} (not a finished run)"


def read_run(path: Path) -> dict:
    """{'run', 'dir', 'config', 'metrics', 'info', 'towers'} of a run directory, or of a metrics file of one
    (e.g. `RUN/metrics-rerank-DUAL.json`: that file's metrics with the run's config); BadInput naming the file
    when one cannot be read or a shown value is not what its column needs."""
    path = Path(path)
    run_dir, metrics = (path.parent, path) if path.is_file() else (path, path / FILES["metrics"])
    name = run_dir.name if metrics.name == FILES["metrics"] else f"{run_dir.name} ({metrics.stem})"
    files = {**{key: run_dir / file for key, file in FILES.items()}, "metrics": metrics}
    run = {"run": name, "dir": run_dir, **{key: _load(file) for key, file in files.items()}}
    run["towers"] = towers(run["config"], run["metrics"])
    for column in (*COLUMNS, *GALLERY):
        value(run, column)
    return run


def towers(config: dict, metrics: dict) -> dict:
    """{'image', 'text'}: the cache's backbone specs (a head run), or the towers a backbone run trained
    (`trained LIBRARY:ARCH`; its text side is the cache's frozen text backbone without `model.text`)."""
    cache = {side: _lookup(metrics, ("provenance", f"{side}_model", "spec")) for side in ("image", "text")}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    if "library" not in model:
        return cache
    text = model.get("text")
    return {
        "image": f"trained {model['library']}:{model.get('arch')}",
        "text": f"trained {text.get('library')}:{text.get('arch')}" if isinstance(text, dict) else cache["text"],
    }


def value(run: dict, column: Column):
    """The column's value in a run (None when absent); a number where the format needs one, else BadInput."""
    found = _lookup(run[column.source], column.keys)
    if found is None:
        return None
    numeric = column.fmt != "{}"
    if numeric and (isinstance(found, bool) or not isinstance(found, Real)):
        where = run["dir"] / FILES.get(column.source, FILES["metrics"])
        raise BadInput(f"{where}: {'.'.join(column.keys)} is {found!r}, not a number")
    return column.then(found) if column.then else found


def _stat(values: list) -> Stat | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return Stat(statistics.mean(present), statistics.stdev(present) if len(present) > 1 else None)


def _group_key(run: dict) -> str:
    config = copy.deepcopy(run["config"])
    config.pop("name", None)
    if isinstance(config.get("training"), dict):
        config["training"].pop("seed", None)
    shown = [value(run, c) for c in (*COLUMNS, *GALLERY) if c.kind in ("setting", "fingerprint")]
    return json.dumps({"config": config, "shown": shown}, sort_keys=True, default=str)


def _cell(runs: list[dict], column: Column):
    if column.kind in ("setting", "fingerprint"):
        return value(runs[0], column)
    values = [value(run, column) for run in runs]
    if column.kind == "epoch":
        return tuple(v for v in values if v is not None) or None
    return _stat(values)


def _row(runs: list[dict]) -> Row:
    first = runs[0]
    cells = {c.name: _cell(runs, c) for c in COLUMNS}
    return Row(tuple(sorted(r["run"] for r in runs)), tuple(value(first, c) for c in GALLERY), cells)


def _rank(row: Row) -> tuple:
    rsum = row.cells["rsum"]
    return (row.tiny, -rsum.mean if rsum else float("inf"))


def table_rows(runs: list[dict], group: bool = False) -> list[Row]:
    """One row per run, or per group of seeds with `group`; sorted as the module docstring says."""
    if not group:
        return sorted((_row([run]) for run in runs), key=_rank)
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    return sorted((_row(members) for members in groups.values()), key=_rank)


def run_label(names: tuple[str, ...], width: int = 30) -> str:
    """A short name for a row's runs: the names, or their common prefix as a glob, or the first and a count."""
    if len(names) == 1 or len(", ".join(names)) <= width:
        return ", ".join(names)
    prefix = os.path.commonprefix(names)
    return f"{prefix}*" if prefix else f"{names[0]} +{len(names) - 1}"


def shown_columns(rows: list[Row], kinds: tuple[str, ...]) -> list[Column]:
    """The columns of these kinds that at least one row has a value for."""
    return [c for c in COLUMNS if c.kind in kinds and any(row.cells[c.name] is not None for row in rows)]


def _has_gallery(rows: list[Row]) -> bool:
    return any(row.gallery[0] is not None for row in rows)


def _gallery_text(row: Row, style: Style) -> str:
    images, captions = row.gallery
    if images is None:
        return ""
    text = f"{images}/{captions}" if captions is not None else f"{images}"
    return text + (style.mark if row.tiny else "")


def _span(values: tuple) -> str:
    low, high = min(values), max(values)
    return f"{low:g}" if low == high else f"{low:g}–{high:g}"


def _epochs_text(row: Row) -> str:
    """`best/run` epochs (`7/10`), or their ranges over a group's runs (`5–9/10`)."""
    best, run = row.cells["best epoch"], row.cells["epochs"]
    return "" if best is None or run is None else f"{_span(best)}/{_span(run)}"


def _number_text(stat: Stat | None, column: Column, style: Style) -> str:
    if stat is None:
        return ""
    text = column.fmt.format(stat.mean)
    if column.kind == "metric" and stat.std is not None:
        text += style.pm + column.fmt.format(stat.std)
    return text


def display_table(rows: list[Row], group: bool, style: Style) -> tuple[list[str], list[list[str]], str]:
    """(header, cell texts, alignment letters) for markdown or LaTeX; `style` gives ±, † and escaping."""
    settings, numbers = shown_columns(rows, ("setting",)), shown_columns(rows, ("metric", "cost"))
    gallery, epochs = _has_gallery(rows), bool(shown_columns(rows, ("epoch",)))
    header = ["run", *(["seeds"] if group else []), *(c.name for c in settings)]
    header += [*(["test gallery"] if gallery else []), *(["best/epochs"] if epochs else []), *(c.name for c in numbers)]
    align = "l" + "r" * group + "l" * len(settings) + "r" * (gallery + epochs + len(numbers))
    cells = []
    for row in rows:
        line = [style.escape(run_label(row.runs)), *([str(len(row.runs))] if group else [])]
        line += [style.escape("" if row.cells[c.name] is None else c.fmt.format(row.cells[c.name])) for c in settings]
        line += [_gallery_text(row, style)] if gallery else []
        line += [style.escape(_epochs_text(row))] if epochs else []
        cells.append(line + [_number_text(row.cells[c.name], c, style) for c in numbers])
    return [style.escape(name) for name in header], cells, align


def footnotes(rows: list[Row], style: Style) -> list[str]:
    """The note under the table when a row's gallery is marked as tiny."""
    return [style.note + style.escape(FOOTNOTE)] if any(row.tiny for row in rows) else []


def _number_columns(column: Column, group: bool) -> list[str]:
    if not group:
        return [column.name]
    return [f"{column.name} mean"] + ([f"{column.name} std"] if column.kind == "metric" else [])


def _as_stat(cell, column: Column) -> Stat | None:
    """A number cell as a Stat: an epoch cell (the runs' values) becomes their mean."""
    return _stat(list(cell or ())) if column.kind == "epoch" else cell


def _number_values(stat: Stat | None, column: Column, group: bool) -> list:
    values = [None, None] if stat is None else [stat.mean, stat.std]
    return values[: len(_number_columns(column, group))]


def csv_table(rows: list[Row], group: bool) -> tuple[list[str], list[list]]:
    """(header, raw values): gallery as two numbers, fingerprints shortened, mean and std apart in groups."""
    settings, numbers = shown_columns(rows, ("setting",)), shown_columns(rows, ("epoch", "metric", "cost"))
    prints, gallery = shown_columns(rows, ("fingerprint",)), _has_gallery(rows)
    header = ["run", *(["seeds"] if group else []), *(c.name for c in settings)]
    header += [*(c.name for c in GALLERY if gallery), *(n for c in numbers for n in _number_columns(c, group))]
    values = []
    for row in rows:
        line = [";".join(row.runs), *([len(row.runs)] if group else []), *(row.cells[c.name] for c in settings)]
        line += list(row.gallery) if gallery else []
        line += [v for c in numbers for v in _number_values(_as_stat(row.cells[c.name], c), c, group)]
        values.append(line + [row.cells[c.name] for c in prints])
    return header + [c.name for c in prints], values
