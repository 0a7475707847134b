"""`xalign inspect DIR`: counts, dims, models, splits and skipped items; verifies every shard's sha256."""

import argparse
from pathlib import Path

from encoding.inspect_cache import report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign inspect", description=__doc__)
    p.add_argument("cache", type=Path)
    return p


def main(argv=None) -> int:
    lines, corrupt = report(build_parser().parse_args(argv).cache)
    print("\n".join(lines))
    return 1 if corrupt else 0
