"""`xalign inspect DIR`: counts, dims, models, splits and skipped items; verifies every shard's sha256.

Exit 1 when a shard's sha256 differs from metadata.json; exit 2 (bad input) when a shard is missing
or not a readable HDF5 file, after the report is printed.
"""

import argparse
from pathlib import Path

from encoding.errors import BadInput
from encoding.inspect_cache import report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign inspect", description=__doc__)
    p.add_argument("cache", type=Path)
    return p


def main(argv=None) -> int:
    lines, corrupt, unreadable = report(build_parser().parse_args(argv).cache)
    print("\n".join(lines))
    if unreadable:
        more = f" (and {len(unreadable) - 1} more shards)" if len(unreadable) > 1 else ""
        raise BadInput(unreadable[0] + more)
    return 1 if corrupt else 0
