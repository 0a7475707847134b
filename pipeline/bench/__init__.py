"""`xalign bench {train,eval,encode} [...]`: each prints one JSON object last on stdout.

Every benchmark measures its loops in one process, one after another, after a warm-up.
"""

import importlib
import sys

from encoding.errors import BadInput

BENCHMARKS = {
    "train": "pipeline.bench.train",
    "eval": "pipeline.bench.eval",
    "encode": "pipeline.bench.encode",
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in BENCHMARKS:
        raise BadInput(f"bench: choose one of {', '.join(BENCHMARKS)} (e.g. `xalign bench train --help`)")
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])
