"""Faiss indexes over L2-normalised vectors (inner product): build, tune, save, load.

Kinds: "exact" (`Flat`, scores equal `queries @ vectors.T`), "auto" (chosen from the vector count and a
memory budget, below), "default" (exact up to EXACT_UP_TO vectors, auto beyond) or any faiss factory
string, taken as is. Ids are row numbers 0..N-1.

EXACT_UP_TO: exact search reads every vector once per query, so its latency grows linearly with N. At
512 dims on 2 shared cores, one query took p50 26 ms at 100k vectors (60 ms under load) and ~110 ms at
200k (`xalign bench search`, faiss IndexFlatIP): 100k is the largest gallery that stays interactive.
Beyond it an approximate index answers 10x+ faster at recall@10 >= 0.95.

"auto" follows autofaiss's `get_optimal_index_keys_v2` with one change: it prefers IVF to HNSW, because
an HNSW graph of 1M x 512 takes tens of minutes to build on a few cores where IVF takes a few minutes and
reaches the same recall target at 10x+ the exact speed. Below IVF_MIN_VECTORS it keeps the exact `Flat`
(then fast anyway). Above, nlist ~ 4 sqrt(N) rounded to a power of 2 (the faiss guideline's 4..16 sqrt(N),
autofaiss's rule under 1M), at most N / 39 (faiss's fewest training points per list), and the first of
IVF{nlist},Flat > IVF{nlist},SQ8 > IVF{nlist},PQ{m} (m = 128 .. 4 bytes a vector) whose estimated size
fits the budget (default: MEMORY_SHARE of the available memory). IVF trains on TRAIN_PER_LIST * nlist
sampled vectors (at least MIN_TRAIN_POINTS): k-means costs linear in its points, and 39 per list is faiss's
floor; at 1M x 512 it took the build from 363 s (64 per list) to 184 s, at recall@10 0.987 (nprobe 5).

Approximate indexes are tuned: the search parameter (nprobe for IVF, efSearch for HNSW) takes the smallest
value whose recall@10 against exact search reaches the target (+ TUNE_MARGIN) on half the queries;
`recall_at_10` is then measured on the other half. Without queries, TUNE_QUERIES random gallery vectors
plus Gaussian noise of norm NOISE_NORM (cosine ~0.9 to their source), renormalised, stand in for them.
"""

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from encoding.atomic import atomic_target
from encoding.errors import BadInput
from pipeline.data.memory_budget import available_memory_bytes

log = logging.getLogger(f"xalign.{__name__}")

EXACT_UP_TO = 100_000
RECALL_TARGET = 0.95
TUNE_MARGIN = 0.01  # tuning aims this much above the target: held-out recall of 500 queries varies by ~0.01
MEMORY_SHARE = 0.8  # of the available memory: the default budget of "auto"
IVF_MIN_VECTORS = 10_000  # auto keeps exact Flat below this (autofaiss's quantization threshold)
TRAIN_PER_LIST = 39
MIN_TRAIN_POINTS = 1 << 16  # the least training sample (PQ codebooks want 39 x 256 points each)
TUNE_QUERIES = 1000
NOISE_NORM = 0.5
SEED = 0
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory(text: str) -> int:
    """ "4G", "512M", "1.5GB", "300MiB", "1000000" -> bytes (K, M, G, T are powers of 1024, with or without B/iB)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    size = int(float(match.group(1)) * UNITS[match.group(2).upper()]) if match else 0
    if size <= 0:
        raise BadInput(f"--max-memory '{text}': expected a size like 4G or 512M")
    return size


@dataclass(frozen=True)
class BuiltIndex:
    index: "faiss.Index"
    info: dict


def nlist_for(n: int) -> int:
    """IVF lists for n vectors: 4 sqrt(n) to the nearest power of 2, at most n / 39."""
    return int(min(2 ** round(math.log2(4 * math.sqrt(n))), 2 ** math.floor(math.log2(n / 39))))


def auto_candidates(n: int, d: int) -> list[tuple[str, int]]:
    """(factory, estimated bytes) from the most to the least accurate."""
    if n < IVF_MIN_VECTORS:
        return [("Flat", 4 * n * d), ("SQ8", n * d)]
    nlist = nlist_for(n)
    lists = nlist * d * 4 + n * 8  # centroids + one int64 id per vector
    pq = [m for m in (128, 64, 32, 16, 8, 4) if m < d]
    keys = [(f"IVF{nlist},Flat", 4 * d), (f"IVF{nlist},SQ8", d)]
    keys += [(f"{'' if d % m == 0 else f'OPQ{m}_{m * -(-d // m)},'}IVF{nlist},PQ{m}", m) for m in pq]
    return [(key, lists + n * code) for key, code in keys]


def auto_factory(n: int, d: int, budget: int) -> str:
    candidates = auto_candidates(n, d)
    for key, size in candidates:
        if size <= budget:
            return key
    smallest = candidates[-1][1]
    raise BadInput(
        f"--max-memory {budget / 2**20:.0f}M cannot hold an index of {n} x {d} vectors: "
        f"the smallest ({candidates[-1][0]}) needs about {smallest / 2**20:.0f}M"
    )


def make_index(key: str, d: int) -> "faiss.Index":
    try:
        return faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise BadInput(f"--index {key}: not a faiss index factory string ({str(err).splitlines()[-1]})") from None


def fill(index, key: str, vectors: np.ndarray, rng: np.random.Generator) -> None:
    """Train on a sample when needed, then add every vector (ids = row numbers)."""
    try:
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            size = min(len(vectors), max(TRAIN_PER_LIST * ivf.nlist if ivf else 0, MIN_TRAIN_POINTS))
            sample = vectors if size == len(vectors) else vectors[np.sort(rng.choice(len(vectors), size, False))]
            log.info("training %s on %d vectors", key, size)
            index.train(sample)
        log.debug("adding %d vectors to %s", len(vectors), key)
        index.add(vectors)
    except RuntimeError as err:
        raise BadInput(f"--index {key}: cannot build it on {vectors.shape} ({str(err).splitlines()[-1]})") from None


def search_parameter(index) -> tuple[str, list[int]] | None:
    """The name and the candidate values (ascending) of the index's speed/recall knob, or None."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return "nprobe", list(range(1, ivf.nlist + 1))
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    if isinstance(inner, faiss.IndexHNSW):
        return "efSearch", list(range(16, 4097))
    return None


def set_params(index, params: dict) -> None:
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def smallest_passing(values: list[int], passes) -> int | None:
    """The smallest value that passes, for a monotone `passes`: doubling steps, then bisection."""
    lo, at = -1, 0
    while not passes(values[at]):
        if at == len(values) - 1:
            return None
        lo, at = at, min(2 * at + 1, len(values) - 1)
    while at - lo > 1:
        mid = (lo + at) // 2
        lo, at = (lo, mid) if passes(values[mid]) else (mid, at)
    return values[at]


def held_out_queries(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picked = vectors[rng.choice(len(vectors), min(TUNE_QUERIES, len(vectors)), replace=False)]
    noisy = picked + rng.standard_normal(picked.shape, dtype=np.float32) * (NOISE_NORM / math.sqrt(picked.shape[1]))
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def tune(index, key: str, vectors: np.ndarray, queries: np.ndarray, target: float, rng) -> tuple[dict, float, int]:
    """(search params, recall@10 on the held-out half, its query count); the params are left set on the index."""
    if len(queries) > TUNE_QUERIES:
        queries = queries[rng.choice(len(queries), TUNE_QUERIES, replace=False)]
    k = min(10, len(vectors))
    exact = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    half = len(queries) // 2
    (tune_q, tune_exact), (held_q, held_exact) = (queries[:half], exact[:half]), (queries[half:], exact[half:])
    if half == 0:
        tune_q, tune_exact = held_q, held_exact
    params, knob = {}, search_parameter(index)
    if knob is not None:
        name, values = knob

        def passes(value: int) -> bool:
            set_params(index, {name: value})
            return recall_at_k(search(index, tune_q, k)[1], tune_exact, k) >= min(target + TUNE_MARGIN, 1.0)

        chosen = smallest_passing(values, passes)
        if chosen is None:
            chosen = values[-1]
            log.warning("%s: recall@10 %.2f not reached at any %s; using %s=%d", key, target, name, name, chosen)
        params = {name: chosen}
        set_params(index, params)
    return params, recall_at_k(search(index, held_q, k)[1], held_exact, k), len(held_q)


def index_bytes(index) -> int:
    """The serialised size, counted without holding a copy."""
    total = 0

    def count(chunk) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


def build_index(
    vectors: np.ndarray,
    kind: str = "default",
    max_memory: int | None = None,
    queries: np.ndarray | None = None,
    recall_target: float = RECALL_TARGET,
) -> BuiltIndex:
    """An inner-product index of `vectors` (N, D) float32, L2-normalised; `queries` (Q, D) tune approximate kinds."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    rng = np.random.default_rng(SEED)
    if kind == "default":
        kind = "exact" if n <= EXACT_UP_TO else "auto"
    budget = max_memory
    if kind == "auto":
        budget = max_memory if max_memory is not None else int(MEMORY_SHARE * available_memory_bytes())
        key = auto_factory(n, d, budget)
    else:
        key = "Flat" if kind == "exact" else kind
    started = time.perf_counter()
    index = make_index(key, d)
    fill(index, key, vectors, rng)
    exact = isinstance(faiss.downcast_index(index), faiss.IndexFlat)
    params, recall, recall_queries = {}, None, 0
    if not exact:
        if queries is None or len(queries) == 0:
            queries = held_out_queries(vectors, rng)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        params, recall, recall_queries = tune(index, key, vectors, queries, recall_target, rng)
    info = {
        "kind": kind if kind in ("exact", "auto") else "factory",
        "factory": key,
        "search_params": params,
        "vectors": n,
        "dim": d,
        "build_s": time.perf_counter() - started,
        "index_mb": index_bytes(index) / 2**20,
        "recall_at_10": recall,
        "recall_queries": recall_queries,
        "max_memory_mb": None if budget is None else budget / 2**20,
    }
    return BuiltIndex(index, info)


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) float32 -> scores (Q, k) float32 descending, ids (Q, k) int64 (-1 past the last found)."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def write_index(index, path: Path) -> None:
    """Write atomically (`encoding.atomic`): a temporary file beside `path`, renamed onto it once complete."""
    with atomic_target(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path: Path, info: dict):
    """The index written at `path`, with `info["search_params"]` applied."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no index file there (build it with `xalign index`)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise BadInput(f"{path}: not a readable faiss index ({str(err).splitlines()[-1]})") from None
    set_params(index, info.get("search_params") or {})
    return index


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean over rows of |found_i[:k] ∩ exact_i[:k]| / k (ids; -1 never counts)."""
    hits = [len(set(f[:k].tolist()) & set(e[:k].tolist()) - {-1}) for f, e in zip(found, exact)]
    return float(np.mean(hits)) / k if hits else 0.0
