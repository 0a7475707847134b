"""`xalign bench search` prints a table, then one JSON object with the contract keys last on stdout."""

import json

import numpy as np
import pytest

from encoding.errors import BadInput
from pipeline.bench import search as bench
from pipeline.cli import main as cli

CONTRACT = ("exact_qps", "index_qps", "recall_at_10", "build_s", "index_mb", "p50_ms", "p99_ms")


def test_bench_search_reports_the_contract_keys(capsys):
    argv = ["bench", "search", "--vectors", "20000", "--dim", "32", "--queries", "100", "--max-memory", "1G"]
    assert cli(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert all(result[key] > 0 for key in CONTRACT)
    assert (result["vectors"], result["dim"], result["queries"]) == (20000, 32, 100)
    assert result["factory"] == "IVF512,Flat" and set(result["search_params"]) == {"nprobe"}
    assert result["qps_ratio"] == pytest.approx(result["index_qps"] / result["exact_qps"])
    assert result["recall_at_10"] >= 0.9 and result["max_memory_mb"] == 1024
    assert result["exact_mb"] == 20000 * 32 * 4 / 2**20 and result["p50_ms"] <= result["p99_ms"]
    assert out[0].startswith("| vectors | factory |")


def test_the_data_is_clustered_unit_vectors():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16, dtype=np.float32)
    basis = np.linalg.qr(rng.standard_normal((16, 2)).astype(np.float32))[0].T
    x = bench.clustered(1000, centres, basis, rng)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    second, best = np.sort(x @ centres.T, axis=1)[:, -2:].T
    assert best.mean() > 0.5 > second.mean()


def test_bench_search_rejects_a_size_below_one():
    with pytest.raises(BadInput, match="--queries 0: must be a positive integer"):
        bench.main(["--queries", "0"])
