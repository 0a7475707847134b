"""`xalign bench search [--vectors N --dim D --queries Q --index KIND --max-memory SIZE --seed S]`: a faiss
index vs exact search.

Data: L2-normalised vectors from a mixture of Gaussians around CENTRES random unit centres: each vector is
its centre, plus a LATENT_DIM-dimensional Gaussian in a subspace shared by all (norm ~LATENT_NORM), plus
isotropic noise (norm ~NOISE_NORM). Embeddings have such structure (clusters, and neighbours along a few
directions within them); random isotropic vectors, whose neighbours are all nearly equidistant, have none,
and neither have bare tight clusters (one IVF list per cluster finds every neighbour). Queries come from the
same mixture but are not in the index; a second such set tunes the index (`build_index`'s held-out queries).

qps counts single-query calls, one after another, as a server sees them (`p50_ms`, `p99_ms` are their
latencies); the exact baseline (`Flat`) times at most EXACT_TIMED queries. `recall_at_10`: the index's
top 10 vs the exact top 10 on all queries. Goal: at 1M x 512, recall@10 >= 0.95 at >= 10x the exact qps,
the index within the memory budget. Prints a table, then one JSON object last on stdout.
"""

import argparse
import json
import sys
import time

import faiss
import numpy as np
from tqdm import tqdm

from pipeline.bench.arguments import require_positive
from pipeline.search import faiss_index

CENTRES = 1000
LATENT_DIM = 32
LATENT_NORM = 0.9
NOISE_NORM = 0.4
EXACT_TIMED = 200
WARMUP = 5
CHUNK = 1 << 16


def clustered(count: int, centres: np.ndarray, basis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(count, D) float32 unit vectors: a random centre (C, D) each, plus a latent point in the span of `basis`
    (L, D orthonormal rows), plus isotropic noise."""
    (latent, d), out = basis.shape, np.empty((count, centres.shape[1]), dtype=np.float32)
    for at in range(0, count, CHUNK):
        rows = out[at : at + CHUNK]
        rows[:] = rng.standard_normal(rows.shape, dtype=np.float32) * (NOISE_NORM / np.sqrt(d))
        rows += centres[rng.integers(0, len(centres), len(rows))]
        rows += rng.standard_normal((len(rows), latent), dtype=np.float32) @ basis * (LATENT_NORM / np.sqrt(latent))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def latencies_ms(index, queries: np.ndarray, what: str, k: int = 10) -> np.ndarray:
    """One query per call, after a warm-up; the milliseconds of each call (a progress bar on a terminal: exact
    search at 1M vectors takes about a minute)."""
    for q in queries[:WARMUP]:
        faiss_index.search(index, q[None], k)
    times = np.empty(len(queries))
    for i, q in enumerate(tqdm(queries, desc=what, unit="query", leave=False, disable=None)):
        started = time.perf_counter()
        faiss_index.search(index, q[None], k)
        times[i] = time.perf_counter() - started
    return times * 1000


def measure(args) -> dict:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((CENTRES, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.standard_normal((args.dim, min(LATENT_DIM, args.dim)), dtype=np.float32))[0].T
    vectors = clustered(args.vectors, centres, basis, rng)
    queries, tuning = clustered(args.queries, centres, basis, rng), clustered(args.queries, centres, basis, rng)
    max_memory = faiss_index.parse_memory(args.max_memory) if args.max_memory else None
    built = faiss_index.build_index(vectors, args.index, max_memory=max_memory, queries=tuning)
    exact = faiss_index.build_index(vectors, "exact").index
    k = min(10, args.vectors)
    recall = faiss_index.recall_at_k(
        faiss_index.search(built.index, queries, k)[1], faiss_index.search(exact, queries, k)[1], k
    )
    index_ms = latencies_ms(built.index, queries, built.info["factory"])
    exact_ms = latencies_ms(exact, queries[:EXACT_TIMED], "exact")
    info = built.info
    return {
        "vectors": args.vectors,
        "dim": args.dim,
        "queries": args.queries,
        "exact_timed_queries": len(exact_ms),
        "factory": info["factory"],
        "search_params": info["search_params"],
        "exact_qps": 1000 / exact_ms.mean(),
        "index_qps": 1000 / index_ms.mean(),
        "qps_ratio": exact_ms.mean() / index_ms.mean(),
        "recall_at_10": recall,
        "tuning_recall_at_10": info["recall_at_10"],
        "build_s": info["build_s"],
        "index_mb": info["index_mb"],
        "exact_mb": args.vectors * args.dim * 4 / 2**20,
        "max_memory_mb": info["max_memory_mb"],
        "p50_ms": float(np.percentile(index_ms, 50)),
        "p99_ms": float(np.percentile(index_ms, 99)),
        "exact_p50_ms": float(np.percentile(exact_ms, 50)),
        "exact_p99_ms": float(np.percentile(exact_ms, 99)),
        "threads": faiss.omp_get_max_threads(),
        "qps_method": "single-query calls one after another (serving), after a warm-up",
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench search", description=__doc__)
    p.add_argument("--vectors", type=int, default=100_000, help="indexed vectors (default 100000)")
    p.add_argument("--dim", type=int, default=512, help="dimension (default 512)")
    p.add_argument("--queries", type=int, default=1000, help="measured queries (default 1000)")
    p.add_argument("--index", default="auto", help="auto, exact, default or a faiss factory string (default auto)")
    p.add_argument("--max-memory", help="memory budget of the index, e.g. 4G (default: a share of the free memory)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    require_positive(args, ("vectors", "dim", "queries"))
    r = measure(args)
    print("| vectors | factory | build s | index MB | exact qps | index qps | ratio | recall@10 | p50/p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {r['vectors']} | {r['factory']} {r['search_params']} | {r['build_s']:.1f} | {r['index_mb']:.0f} | "
        f"{r['exact_qps']:.0f} | {r['index_qps']:.0f} | {r['qps_ratio']:.1f} | {r['recall_at_10']:.3f} | "
        f"{r['p50_ms']:.2f}/{r['p99_ms']:.2f} |"
    )
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
