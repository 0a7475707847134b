"""Re-ranking: only the top K order changes, and the metrics equal a brute-force re-rank."""

import pytest
import torch
import torch.nn.functional as F

from encoding.errors import BadInput
from pipeline.evaluation.metrics import retrieval_metrics
from pipeline.evaluation.rerank import ranks_from_scores, reranked, reranked_metrics


def data(n=12, per_image=3, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    index = torch.arange(n).repeat_interleave(per_image)
    text = F.normalize(image[index] + 0.9 * torch.randn(len(index), dim, generator=g), dim=-1)
    cross = torch.randn(n, len(index), generator=g)  # a "cross encoder": a fixed random score per pair
    return image, text, index, cross


def brute_force_ranks(scores: torch.Tensor, cross: torch.Tensor, positive: torch.Tensor, k: int) -> list[int]:
    """Per query: the top K by score re-ordered by cross score, then the rest by score; rank of the first
    positive, counting ties of the rest against the query (as the metrics do)."""
    ranks = []
    for q in range(len(scores)):
        row = scores[q].tolist()
        top = sorted(range(len(row)), key=lambda j: -row[j])[:k]
        top = sorted(top, key=lambda j: (-cross[q, j].item(), top.index(j)))
        if not positive[q].any():
            ranks.append(0)
            continue
        hit = next((place for place, j in enumerate(top) if positive[q, j]), None)
        if hit is not None:
            ranks.append(hit + 1)
            continue
        best = max(row[j] for j in range(len(row)) if positive[q, j])
        rest = [j for j in range(len(row)) if j not in top and not positive[q, j] and row[j] >= best]
        ranks.append(k + len(rest) + 1)
    return ranks


def test_rerank_changes_only_the_top_k_order():
    image, text, _, cross = data()
    scores = image @ text.T
    k = 4
    new = reranked(scores, k, lambda q, g: cross[q, g], torch.arange(len(image)))
    for q in range(len(scores)):
        old_order, new_order = scores[q].argsort(descending=True), new[q].argsort(descending=True)
        assert set(old_order[:k].tolist()) == set(new_order[:k].tolist())
        assert new_order[k:].tolist() == old_order[k:].tolist()  # every rank beyond K unchanged
        expected = sorted(old_order[:k].tolist(), key=lambda j: -cross[q, j].item())
        assert new_order[:k].tolist() == expected


@pytest.mark.parametrize("k", [1, 3, 5, 40])
def test_reranked_metrics_equal_a_brute_force_rerank(k):
    image, text, index, cross = data()
    metrics = reranked_metrics(image, text, index, k, lambda i, c: cross[i, c])
    i2t_positive = index[None, :] == torch.arange(len(image))[:, None]
    i2t = brute_force_ranks(image @ text.T, cross, i2t_positive, k)
    t2i = brute_force_ranks(text @ image.T, cross.T, i2t_positive.T, k)
    for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
        ranks = torch.tensor(ranks, dtype=torch.float64)
        for r in (1, 5, 10):
            assert metrics[direction][f"R@{r}"] == pytest.approx(100 * (ranks <= r).double().mean().item())
        assert metrics[direction]["mean_rank"] == pytest.approx(ranks.mean().item())
    assert metrics["rerank_k"] == k


def test_rerank_by_the_dual_scores_themselves_changes_nothing():
    image, text, index, _ = data(seed=3)
    dual = image @ text.T
    metrics = reranked_metrics(image, text, index, 5, lambda i, c: dual[i, c])
    plain = retrieval_metrics(image, text, index)
    for direction in ("i2t", "t2i"):
        assert metrics[direction] == pytest.approx(plain[direction])


def test_ranks_count_ties_against_the_query_and_skip_queries_without_positives():
    scores = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.3, 0.2, 0.1]])
    positive = torch.tensor([[True, False, False], [False, True, True], [False, False, False]])
    assert ranks_from_scores(scores, positive).tolist() == [2, 1, 0]


def test_rerank_k_must_be_positive():
    image, text, index, cross = data()
    with pytest.raises(BadInput, match="--rerank-k 0"):
        reranked_metrics(image, text, index, 0, lambda i, c: cross[i, c])
