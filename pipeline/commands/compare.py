"""`xalign compare RUN_DIR... [--group-seeds] [--csv | --latex] [--out FILE]`: one table of runs.

Each row: what produced the run (dataset, cache, backbones), its key settings, test gallery size,
test metrics and cost side, best rsum first (see `pipeline.reporting.comparison` for the columns, the order and
how `--group-seeds` groups). A test gallery under 100 images is marked † with a note under the table
and a warning on stderr. Entries that are not runs (`results/README.md`, `results/optuna`, a directory
without metrics.json) are skipped with a note on stderr, so `xalign compare results/*` works; a run that
cannot be read (e.g. a corrupt metrics.json) is left out with a warning. Exit 0 when the table
has at least one run, 2 when no run could be read. `--out` never replaces a run's own files (config,
checkpoints, metrics*.json, ...): that is refused (exit 2) before anything is read.
"""

import argparse
import logging
from pathlib import Path

from encoding.errors import BadInput
from pipeline.reporting import comparison
from pipeline.reporting.tables import LATEX, MARKDOWN, csv_text, latex, markdown
from pipeline.runs.files import check_output

log = logging.getLogger(f"xalign.{__name__}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign compare", description=__doc__)
    p.add_argument(
        "runs", nargs="+", type=Path, help="run directories written by `xalign train` (or metrics JSON files in them)"
    )
    p.add_argument(
        "--group-seeds", action="store_true", help="one row per config across seeds: mean ± std (sample std)"
    )
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--csv", action="store_true", help="CSV with raw numbers instead of a markdown table")
    layout.add_argument("--latex", action="store_true", help="a booktabs LaTeX tabular instead of markdown")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the table to FILE")
    return p


def read_runs(paths: list[Path]) -> list[dict]:
    """The runs among `paths`; other entries are skipped with a note, runs that cannot be read with a warning;
    BadInput when no run is left."""
    runs, unreadable = [], 0
    for path in paths:
        reason = comparison.skip_reason(path)
        if reason is not None:
            log.info(f"skipping {path}: {reason}")
            continue
        try:
            runs.append(comparison.read_run(path))
        except BadInput as err:
            unreadable += 1
            log.warning(f"skipping {path}: {err}")
    if not runs:
        found = f"{unreadable} could not be read" if unreadable else "none holds a metrics.json"
        raise BadInput(f"compare: no run to compare among {', '.join(map(str, paths))} ({found})")
    return runs


def render(rows: list, args) -> str:
    """The table in the layout the flags ask for."""
    if args.csv:
        return csv_text(*comparison.csv_table(rows, args.group_seeds))
    style = LATEX if args.latex else MARKDOWN
    header, cells, align = comparison.display_table(rows, args.group_seeds, style)
    notes = comparison.footnotes(rows, style)
    return latex(header, cells, align, notes) if args.latex else markdown(header, cells, notes)


def warn_tiny(rows: list) -> None:
    """A warning naming the runs whose test gallery is too small to mean much."""
    tiny = [name for row in rows if row.tiny for name in row.runs]
    if tiny:
        names = ", ".join(tiny)
        after = f"ranked after the runs with at least {comparison.TINY_GALLERY} test images"
        log.warning(f"{names}: {comparison.FOOTNOTE}; {after}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.out:
        check_output(args.out, "--out")
    rows = comparison.table_rows(read_runs(args.runs), group=args.group_seeds)
    warn_tiny(rows)
    text = render(rows, args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0
