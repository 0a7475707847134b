"""`xalign bench {train,eval,encode,attention,search,import,recipe,scale} [...]`: each prints one JSON object
last on stdout.

Every benchmark measures after a warm-up; train and encode run their loops in one process, one after
another; eval and attention run each size in a fresh subprocess, so that its peak memory is its own, import
runs the import in one, recipe its steps in one, and scale each command in one.
"""

import importlib
import sys

from encoding.errors import BadInput

BENCHMARKS = {
    "train": ("pipeline.bench.train", "head-training throughput: engine vs the limit and the naive loop"),
    "eval": ("pipeline.bench.eval", "retrieval metrics: chunked vs the bare similarity matmul"),
    "encode": ("pipeline.bench.encode", "encoding throughput: the pipeline vs the bare forward pass"),
    "attention": (
        "pipeline.bench.attention",
        "time and peak memory of token_transformer vs sparse_attention vs token count",
    ),
    "search": ("pipeline.bench.search", "faiss index vs exact search: single-query qps, latency, recall@10, memory"),
    "import": ("pipeline.bench.imports", "xalign import from .npy: rows/s and peak memory as the input grows"),
    "recipe": ("pipeline.bench.recipe", "a recipe's first steps at its own batch size: seconds a step, peak memory"),
    "scale": ("pipeline.bench.scale", "split, one streamed epoch and evaluate on millions of captions: time, memory"),
}


def usage() -> str:
    width = max(map(len, BENCHMARKS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in BENCHMARKS.items())
    return f"{__doc__}\nbenchmarks:\n{rows}\n\n`xalign bench <benchmark> --help` for a benchmark's options."


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv or argv[0] not in BENCHMARKS:
        given = f"'{argv[0]}' is not a benchmark" if argv else "no benchmark given"
        raise BadInput(f"bench: {given}; choose one of {', '.join(BENCHMARKS)} (e.g. `xalign bench train --help`)")
    return importlib.import_module(BENCHMARKS[argv[0]][0]).main(argv[1:])
