"""`xalign compare RUN_DIR... [--csv] [--out FILE]`: one table of runs, best rsum first.

Each row: the run's test metrics, key settings and cost side (see `pipeline.comparison`).
Directories without metrics.json (e.g. `results/optuna`) are skipped with a note on stderr.
"""

import argparse
import sys
from pathlib import Path

from encoding.errors import BadInput
from pipeline.comparison import column_formats, read_run, table_rows
from pipeline.tables import csv_text, markdown


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign compare", description=__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="run directories written by `xalign train`")
    p.add_argument("--csv", action="store_true", help="CSV instead of a markdown table")
    p.add_argument("--out", type=Path, help="also write the table to FILE")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    runs = []
    for run_dir in args.runs:
        run = read_run(run_dir)
        if run is None:
            print(f"skipping {run_dir}: no metrics.json", file=sys.stderr)
        else:
            runs.append(run)
    if not runs:
        raise BadInput(f"compare: none of {', '.join(map(str, args.runs))} holds a metrics.json")
    header, rows = table_rows(runs)
    text = csv_text(header, rows) if args.csv else markdown(header, rows, column_formats(header))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0
