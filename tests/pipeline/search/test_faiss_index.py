"""faiss indexes: exact search equals a numpy ranking; approximate kinds reach their recall target; auto fits
its budget; sizes, factory strings and index files are checked."""

import logging

import numpy as np
import pytest

from encoding.errors import BadInput
from pipeline.search import faiss_index as fi


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int, seed: int = 0, centres: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    return unit(c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, d)))


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def test_exact_search_equals_a_numpy_ranking():
    rng = np.random.default_rng(1)
    vectors, queries = unit(rng.standard_normal((500, 16))), unit(rng.standard_normal((30, 16)))
    built = fi.build_index(vectors, "exact")
    scores, ids = fi.search(built.index, queries, 10)
    want_scores, want_ids = brute_force(vectors, queries, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert built.info["kind"] == "exact" and built.info["factory"] == "Flat" and built.info["recall_at_10"] is None


def test_default_is_exact_for_a_small_gallery():
    built = fi.build_index(clustered(300, 8), "default")
    assert built.info["kind"] == "exact" and built.info["factory"] == "Flat" and built.info["search_params"] == {}


def test_k_past_the_gallery_pads_with_minus_one():
    vectors = clustered(5, 8)
    scores, ids = fi.search(fi.build_index(vectors, "exact").index, vectors[:2], 8)
    assert ids.shape == (2, 8) and (ids[:, 5:] == -1).all() and (ids[:, :5] >= 0).all()


@pytest.mark.parametrize("kind", ["auto", "IVF64,Flat", "HNSW16"])
def test_an_approximate_index_reaches_its_recall_target(kind):
    vectors, queries = clustered(10_000, 32), clustered(400, 32, seed=1)
    built = fi.build_index(vectors, kind, queries=queries)
    info = built.info
    assert info["recall_at_10"] >= fi.RECALL_TARGET and info["recall_queries"] == 200
    assert set(info["search_params"]) <= {"nprobe", "efSearch"} and len(info["search_params"]) == 1
    fresh = clustered(300, 32, seed=2)
    found = fi.search(built.index, fresh, 10)[1]
    assert fi.recall_at_k(found, brute_force(vectors, fresh, 10)[1]) >= 0.9


def test_without_queries_the_index_tunes_on_noisy_gallery_vectors():
    built = fi.build_index(clustered(20_000, 32), "auto")
    assert built.info["kind"] == "auto" and built.info["factory"].startswith("IVF")
    assert built.info["recall_at_10"] >= fi.RECALL_TARGET and built.info["recall_queries"] == fi.TUNE_QUERIES // 2


def test_an_unreachable_target_takes_the_best_value_and_warns(caplog):
    vectors = clustered(3_000, 16)
    with caplog.at_level(logging.WARNING, logger="xalign.pipeline.search.faiss_index"):
        built = fi.build_index(vectors, "IVF8,PQ2x4", recall_target=0.999)
    assert built.info["search_params"] == {"nprobe": 8}
    assert "IVF8,PQ2x4: recall@10 1.00 not reached" in caplog.text


def test_auto_picks_a_smaller_index_under_a_smaller_budget():
    n, d = 50_000, 64
    assert fi.auto_factory(n, d, 1 << 30) == "IVF1024,Flat"
    assert fi.auto_factory(n, d, 5 << 20) == "IVF1024,SQ8"
    assert fi.auto_factory(n, d, 5 << 19) == "IVF1024,PQ32"
    assert fi.auto_factory(100_000, 100, 2 << 20) == "OPQ8_104,IVF1024,PQ8"
    assert fi.auto_factory(5_000, d, 1 << 30) == "Flat"
    with pytest.raises(BadInput, match=r"--max-memory 0M cannot hold an index of 50000 x 64 vectors: .*PQ4.* needs"):
        fi.auto_factory(n, d, 1000)


def test_auto_builds_within_its_budget():
    vectors = clustered(20_000, 32)
    big = fi.build_index(vectors, "auto", max_memory=fi.parse_memory("1G"))
    small = fi.build_index(vectors, "auto", max_memory=fi.parse_memory("1M"))
    assert big.info["factory"] == "IVF512,Flat" and small.info["factory"] == "IVF512,SQ8"
    assert (
        small.info["index_mb"] <= small.info["max_memory_mb"] == 1.0 and small.info["index_mb"] < big.info["index_mb"]
    )
    with pytest.raises(BadInput, match="--max-memory"):
        fi.build_index(vectors, "auto", max_memory=1000)


def test_nlist_grows_as_four_square_roots_within_39_points_a_list():
    assert [fi.nlist_for(n) for n in (10_000, 100_000, 1_000_000)] == [256, 1024, 4096]


@pytest.mark.parametrize(
    ("text", "size"),
    [("4G", 4 << 30), ("512M", 512 << 20), ("1.5GB", 3 << 29), ("300MiB", 300 << 20), ("1000000", 10**6), ("2k", 2048)],
)
def test_parse_memory(text, size):
    assert fi.parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "lots", "4X", "-1G", "0", "G"])
def test_parse_memory_rejects_what_is_not_a_size(text):
    with pytest.raises(BadInput, match=f"--max-memory '{text}': expected a size like 4G or 512M"):
        fi.parse_memory(text)


def test_an_invalid_factory_string_is_bad_input():
    with pytest.raises(BadInput, match="--index IVFxx: not a faiss index factory string .*IVFxx"):
        fi.build_index(clustered(100, 8), "IVFxx")


def test_a_factory_that_cannot_train_on_so_few_vectors_is_bad_input():
    with pytest.raises(BadInput, match=r"--index IVF512,Flat: cannot build it on \(100, 8\)"):
        fi.build_index(clustered(100, 8), "IVF512,Flat")


def test_write_read_round_trip_keeps_the_search_params(tmp_path):
    vectors, queries = clustered(5_000, 16), clustered(50, 16, seed=3)
    built = fi.build_index(vectors, "IVF64,Flat", queries=clustered(200, 16, seed=4))
    path = tmp_path / "gallery.faiss"
    fi.write_index(built.index, path)
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.faiss"]
    loaded = fi.read_index(path, built.info)
    assert loaded.nprobe == built.info["search_params"]["nprobe"]
    for got, want in zip(fi.search(loaded, queries, 10), fi.search(built.index, queries, 10)):
        np.testing.assert_array_equal(got, want)


def test_read_index_names_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(BadInput, match="gone.faiss: no index file there"):
        fi.read_index(tmp_path / "gone.faiss", {"search_params": {}})
    (tmp_path / "bad.faiss").write_bytes(b"not an index")
    with pytest.raises(BadInput, match="bad.faiss: not a readable faiss index"):
        fi.read_index(tmp_path / "bad.faiss", {"search_params": {}})


def test_recall_at_k_counts_shared_ids_over_k():
    found, exact = np.array([[1, 2, 3, -1], [4, 5, 6, 7]]), np.array([[3, 2, 9, 8], [4, 5, 6, 7]])
    assert fi.recall_at_k(found, exact, k=4) == (2 / 4 + 4 / 4) / 2
