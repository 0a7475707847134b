"""Retrieval metrics: hand-worked tiny cases, and the tiled pass against an argsort-based full-matrix reference."""

import numpy as np
import pytest
import torch

from encoding.errors import BadInput
from pipeline.evaluation import metrics
from pipeline.evaluation.metrics import median, ranks_both_ways, retrieval_metrics


def reference_ranks(image: np.ndarray, text: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks from the full score matrix: sort each row by score, wrong items before right ones among equals."""
    scores = image @ text.T  # (N, M)
    i2t = np.zeros(len(image), dtype=int)
    for i in range(len(image)):
        positive = index == i
        if positive.any():
            order = np.lexsort((positive, -scores[i]))
            i2t[i] = np.flatnonzero(positive[order])[0] + 1
    t2i = np.zeros(len(text), dtype=int)
    for j in range(len(text)):
        positive = np.arange(len(image)) == index[j]
        order = np.lexsort((positive, -scores[:, j]))
        t2i[j] = np.flatnonzero(positive[order])[0] + 1
    return i2t, t2i


def test_hand_worked_variable_captions_no_caption_and_ties():
    # 3 images (one-hot), 4 captions: image 0 has captions 0 and 1, image 1 has caption 2, image 2 has none.
    image = np.eye(3, dtype=np.float32)
    text = np.array(
        [
            [0.2, 0.9, 0.0],  # caption 0 of image 0: image 1 scores higher → t2i rank 2
            [0.8, 0.1, 0.0],  # caption 1 of image 0: t2i rank 1
            [0.5, 0.5, 0.0],  # caption 2 of image 1: tied with image 0, which counts against it → rank 2
        ],
        dtype=np.float32,
    )
    index = np.array([0, 0, 1])
    # i2t: image 0 scores captions (0.2, 0.8, 0.5): best own 0.8 → rank 1.
    #      image 1 scores captions (0.9, 0.1, 0.5): own 0.5, caption 0 higher → rank 2.
    m = retrieval_metrics(image, text, index, ks=(1, 2))
    assert m["num_images"] == 3 and m["num_captions"] == 3 and m["images_without_captions"] == 1
    assert m["i2t"]["R@1"] == pytest.approx(50.0) and m["i2t"]["R@2"] == pytest.approx(100.0)
    assert m["i2t"]["median_rank"] == pytest.approx(1.5) and m["i2t"]["mean_rank"] == pytest.approx(1.5)
    # t2i ranks (2, 1, 2)
    assert m["t2i"]["R@1"] == pytest.approx(100 / 3) and m["t2i"]["R@2"] == pytest.approx(100.0)
    assert m["t2i"]["median_rank"] == 2 and m["t2i"]["mean_rank"] == pytest.approx(5 / 3)
    assert m["rsum"] == pytest.approx(50 + 100 + 100 + 100 / 3 + 100 + 100)  # R@1, R@5, R@10 both ways


def test_own_captions_tied_with_each_other_do_not_count_against_the_image():
    image = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    text = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # image 0's two identical captions
    i2t, t2i = ranks_both_ways(torch.tensor(image), torch.tensor(text), torch.tensor([0, 0, 1]))
    assert i2t.tolist() == [1, 1] and t2i.tolist() == [1, 1, 1]


def test_collapsed_embeddings_get_the_worst_ranks():
    image, text = np.ones((4, 3), np.float32), np.ones((8, 3), np.float32)
    m = retrieval_metrics(image, text, np.arange(8) // 2)
    assert m["t2i"]["R@1"] == 0 and m["t2i"]["median_rank"] == 4
    assert m["i2t"]["R@1"] == 0 and m["i2t"]["mean_rank"] == 7  # 6 wrong captions tie above the best own one


@pytest.mark.parametrize("seed", range(6))
def test_tiled_pass_matches_reference_on_random_data(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    n, m, d = rng.integers(5, 40), rng.integers(5, 120), rng.integers(2, 9)
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", int(rng.integers(4, 60)))
    monkeypatch.setattr(metrics, "TILE_ROWS", int(rng.integers(2, 7)))
    # small integers make many exact ties; some images get no caption
    image = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    text = rng.integers(-2, 3, size=(m, d)).astype(np.float32)
    index = rng.integers(0, n, size=m)
    rows, cols = metrics.tile_shape(n, m, torch.device("cpu"))
    assert rows < n and cols < m  # several tiles both ways
    i2t, t2i = ranks_both_ways(torch.tensor(image), torch.tensor(text), torch.tensor(index))
    expected_i2t, expected_t2i = reference_ranks(image, text, index)
    np.testing.assert_array_equal(i2t.numpy(), expected_i2t)
    np.testing.assert_array_equal(t2i.numpy(), expected_t2i)


def test_metrics_from_reference_ranks_on_gaussian_data(monkeypatch):
    rng = np.random.default_rng(7)
    image, text = rng.normal(size=(50, 16)).astype(np.float32), rng.normal(size=(140, 16)).astype(np.float32)
    index = rng.integers(0, 45, size=140)  # images 45..49 have no captions
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 97)
    got = retrieval_metrics(image, text, index, ks=(1, 5, 10, 50))
    i2t, t2i = reference_ranks(image, text, index)
    i2t = i2t[i2t > 0]
    assert got["images_without_captions"] == int((np.bincount(index, minlength=50) == 0).sum())
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10, 50):
            assert got[name][f"R@{k}"] == pytest.approx(100 * np.mean(ranks <= k))
        assert got[name]["median_rank"] == pytest.approx(np.median(ranks))
        assert got[name]["mean_rank"] == pytest.approx(np.mean(ranks))


def test_rowwise_fallback_when_tile_scores_differ_from_the_positives(monkeypatch):
    """A backend whose sums depend on the tile: the captions whose positive differs are redone from full rows."""
    rng = np.random.default_rng(3)
    image = rng.integers(-2, 3, size=(12, 4)).astype(np.float32)
    text = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)
    index = rng.integers(0, 12, size=30)
    original = metrics._positive_scores

    def nudged(*args):
        positive = original(*args)
        positive[::3] = torch.nextafter(positive[::3], torch.tensor(np.inf))
        return positive

    monkeypatch.setattr(metrics, "_positive_scores", nudged)
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 20)
    i2t, t2i = ranks_both_ways(torch.tensor(image), torch.tensor(text), torch.tensor(index))
    expected_i2t, expected_t2i = reference_ranks(image, text, index)
    np.testing.assert_array_equal(i2t.numpy(), expected_i2t)
    np.testing.assert_array_equal(t2i.numpy(), expected_t2i)


def test_median_of_even_and_odd_counts():
    assert median(torch.tensor([4, 1, 3, 2])) == 2.5
    assert median(torch.tensor([5, 1, 3])) == 3


def test_rsum_is_over_1_5_10_whatever_ks():
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(20, 4)), rng.normal(size=(40, 4))
    index = np.arange(40) // 2
    base = retrieval_metrics(image, text, index)
    more = retrieval_metrics(image, text, index, ks=(2, 50))
    assert more["rsum"] == base["rsum"] and {"R@1", "R@2", "R@5", "R@10", "R@50"} <= set(more["i2t"])


def test_tensor_inputs_and_large_caption_counts_per_image():
    image = torch.eye(3)
    text = torch.cat([torch.eye(3)[[0]].repeat(500, 1), torch.eye(3)[[1]]])  # image 0 has 500 captions
    m = retrieval_metrics(image, text, torch.tensor([0] * 500 + [1]))
    assert m["i2t"]["R@1"] == 100 and m["t2i"]["R@1"] == 100 and m["images_without_captions"] == 1


@pytest.mark.parametrize(
    ("image", "text", "index", "message"),
    [
        (np.ones((2, 3)), np.ones((2, 4)), [0, 1], "need \\(N, D\\) images"),
        (np.ones((2, 3)), np.ones((0, 3)), [], "nothing to rank"),
        (np.ones((2, 3)), np.ones((2, 3)), [0], "caption_image_index has shape"),
        (np.ones((2, 3)), np.ones((2, 3)), [0, 2], "must lie in"),
        (np.full((2, 3), np.nan), np.ones((2, 3)), [0, 1], "NaN or infinite"),
    ],
)
def test_bad_inputs(image, text, index, message):
    with pytest.raises(BadInput, match=message):
        retrieval_metrics(image, text, index)
