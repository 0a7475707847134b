"""Re-ranking: a pair scorer (a cross encoder) re-orders each query's top K of a dual encoder's ranking.

For every query, the K gallery items the dual encoder scores highest are scored again by
`score_pairs(query_rows, gallery_rows)` and take the first K places in the order of those scores
(equal pair scores stay tied, and ties count against the query as everywhere); every item beyond
the top K keeps its dual score and place. Which of several items tied exactly at the K-th dual score
enters the top K is `torch.topk`'s choice. Metrics follow `pipeline.evaluation.metrics` (CLIP_benchmark's
definition): a query's rank is 1 + the number of non-matching gallery items scoring at least as high
as its best match. Queries are processed `QUERY_BLOCK` at a time, so memory is (block, gallery).
A K beyond a direction's gallery (captions for i2t, images for t2i) re-ranks the whole gallery there;
metrics record the K asked for (`rerank_k`), and `clamp_warning` says which K was used.
"""

from collections.abc import Callable

import torch
from tqdm import tqdm

from encoding.errors import BadInput
from pipeline.evaluation.metrics import metrics_from_ranks

QUERY_BLOCK = 256
PAIR_BATCH = 1024  # pairs per `score_pairs` call

PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (P,) query rows, (P,) gallery rows → (P,)


def reranked(scores: torch.Tensor, k: int, score_pairs: PairScorer, query_rows: torch.Tensor) -> torch.Tensor:
    """(Q, G) dual scores → (Q, G) scores whose top K per row are re-ordered by `score_pairs` and lifted above
    every other item; the rest are unchanged. `query_rows` (Q,) are the queries' rows passed to `score_pairs`."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (Q, K), best first
    queries = query_rows[:, None].expand(-1, k).reshape(-1)
    gallery = top.reshape(-1)
    pair = (
        torch.cat(
            [
                score_pairs(queries[i : i + PAIR_BATCH], gallery[i : i + PAIR_BATCH])
                for i in range(0, len(gallery), PAIR_BATCH)
            ]
        )
        .view(-1, k)
        .to(scores.device)
    )
    pair = pair.to(scores.dtype)
    floor = scores.max(dim=1, keepdim=True).values + 1 - pair.min(dim=1, keepdim=True).values
    return scores.clone().scatter_(1, top, floor + pair)  # monotone in the pair scores: equal ones stay tied


def ranks_from_scores(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """(Q,) 1-based ranks: 1 + non-positive items scoring >= the best positive; 0 for a query with no positive."""
    best = scores.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
    ranks = ((scores >= best) & ~positive).sum(dim=1) + 1
    return torch.where(positive.any(dim=1), ranks, 0)


def progress(blocks: tuple, desc: str):
    """The query blocks with a progress bar (on a terminal): a cross encoder takes minutes on CPU."""
    return tqdm(blocks, desc=desc, unit="block", leave=False, disable=None)


def reranked_metrics(
    image: torch.Tensor,
    text: torch.Tensor,
    caption_image_index: torch.Tensor,
    k: int,
    score_pairs: PairScorer,
    ks=(1, 5, 10),
) -> dict:
    """Retrieval metrics (the dict of `retrieval_metrics`) of (N, D) image and (M, D) caption embeddings whose
    top-K lists are re-ranked by `score_pairs(image_rows, caption_rows) -> (P,)` in both directions."""
    if k < 1:
        raise BadInput(f"--rerank-k {k}: expected a positive number of candidates")
    index = caption_image_index.to(image.device)
    images, captions = torch.arange(len(image), device=image.device), torch.arange(len(text), device=image.device)
    image_ranks = torch.cat(
        [
            ranks_from_scores(reranked(image[b] @ text.T, k, score_pairs, b), index[None, :] == b[:, None])
            for b in progress(images.split(QUERY_BLOCK), f"re-rank i2t top {k}")
        ]
    )
    caption_ranks = torch.cat(
        [
            ranks_from_scores(
                reranked(text[b] @ image.T, k, lambda c, i: score_pairs(i, c), b), images[None, :] == index[b][:, None]
            )
            for b in progress(captions.split(QUERY_BLOCK), f"re-rank t2i top {k}")
        ]
    )
    return {
        **metrics_from_ranks(image_ranks, caption_ranks, ks),
        "rerank_k": k,
    }


def clamp_warning(metrics: dict) -> str | None:
    """A warning naming the K used per direction when the metrics' `rerank_k` exceeds a gallery, else None."""
    k, images, captions = metrics.get("rerank_k"), metrics["num_images"], metrics["num_captions"]
    if k is None or k <= min(images, captions):
        return None
    return (
        f"warning: rerank K {k} exceeds the {metrics['split']} split's gallery ({images} images, {captions} "
        f"captions); clamped per direction: K {min(k, captions)} for i2t (captions per image), "
        f"K {min(k, images)} for t2i (images per caption)"
    )
