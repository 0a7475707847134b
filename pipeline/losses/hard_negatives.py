"""Hard-negative weighting (Robinson et al., 2021, "Contrastive Learning with Hard Negative Samples").

Each negative of a row gets weight w = K · softmax(β · similarity) over that row's K negatives
(mean 1, no gradient), so negatives closer to the anchor count more; positives keep weight 1.
β = 0 gives w = 1 everywhere, i.e. the unweighted loss. Softmax losses add log w to their logits
(weighting the exponentials of the denominator); the sigmoid loss multiplies each pair's term by w.
"""

import torch


@torch.no_grad()
def negative_weights(similarity: torch.Tensor, positives: torch.Tensor, beta: float) -> torch.Tensor:
    """(B, K) weights from (B, K) cosine similarities and the (B, K) bool positive mask."""
    if beta == 0:
        return torch.ones_like(similarity)
    negatives = ~positives
    logits = (beta * similarity).masked_fill(positives, float("-inf"))
    weights = torch.softmax(logits, dim=1).nan_to_num(0.0) * negatives.sum(dim=1, keepdim=True)
    return torch.where(negatives, weights, torch.ones_like(weights))


def reweight_logits(logits: torch.Tensor, similarity, positives, beta: float) -> torch.Tensor:
    """Softmax logits with log w added (unchanged when β = 0)."""
    if beta == 0:
        return logits
    return logits + negative_weights(similarity, positives, beta).log()
