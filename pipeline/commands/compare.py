"""`xalign compare RUN_DIR... [--group-seeds] [--csv | --latex] [--out FILE]`: one table of runs.

Each row: what produced the run (dataset, cache, backbones), its key settings, test gallery size,
test metrics and cost side, best rsum first (see `pipeline.comparison` for the columns, the order and
how `--group-seeds` groups). A test gallery under 100 images is marked † with a note under the table
and a warning on stderr. Directories without metrics.json (e.g. `results/optuna`) are skipped with a
note on stderr.
"""

import argparse
import sys
from pathlib import Path

from encoding.errors import BadInput
from pipeline import comparison
from pipeline.tables import LATEX, MARKDOWN, csv_text, latex, markdown


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
    """The runs among `paths`; directories without metrics.json are skipped with a note on stderr."""
    runs = []
    for run_dir in paths:
        run = comparison.read_run(run_dir)
        if run is None:
            print(f"skipping {run_dir}: no metrics.json", file=sys.stderr)
        else:
            runs.append(run)
    if not runs:
        raise BadInput(f"compare: none of {', '.join(map(str, paths))} holds a metrics.json")
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
    """A warning on stderr naming the runs whose test gallery is too small to mean much."""
    tiny = [name for row in rows if row.tiny for name in row.runs]
    if tiny:
        names = ", ".join(tiny)
        after = f"ranked after the runs with at least {comparison.TINY_GALLERY} test images"
        print(f"warning: {names}: {comparison.FOOTNOTE}; {after}", file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows = comparison.table_rows(read_runs(args.runs), group=args.group_seeds)
    warn_tiny(rows)
    text = render(rows, args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0
