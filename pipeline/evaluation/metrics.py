"""Image–caption retrieval metrics (CLIP_benchmark's definition), computed in one chunked pass.

t2i: a caption hits at K if its image is among its top K images.
i2t: an image hits at K if ANY of its captions is among its top K captions, so its rank is that of
its best-scoring caption. Every image and caption is in the gallery; images with no caption are
left out of i2t and counted. Ranks are 1-based. Ties count against the query: a wrong gallery item
scoring exactly as high as the positive ranks above it (so a collapsed model that scores every pair
alike gets the worst ranks, not the best). Median rank of an even count is the mean of the middle two.

Memory: one (rows, cols) tile of image–caption scores at a time (`CHUNK_ELEMENTS` entries) plus a
few (N,) and (M,) vectors, whatever the gallery size. Both directions are counted from the same
tiles, so every image–caption score is computed once (plus each caption with its own image).
"""

import math

import numpy as np
import torch
from tqdm import tqdm

from encoding.errors import BadInput

CHUNK_ELEMENTS = 1 << 20  # image–caption scores per tile on CPU: 4 MB of float32, whatever the gallery size
CUDA_CHUNK_FACTOR = 64  # GPUs take larger tiles (fewer kernel launches)
RSUM_KS = (1, 5, 10)  # rsum is always the sum of these six recalls, so runs stay comparable whatever --ks says
TILE_ROWS = 512  # images per tile; the tile's caption count follows from CHUNK_ELEMENTS


def _as_tensor(x, dtype=torch.float32, device=None) -> torch.Tensor:
    return torch.as_tensor(x if torch.is_tensor(x) else np.asarray(x), device=device).to(dtype)


def median(values: torch.Tensor) -> float:
    """Median of a 1-d tensor; the mean of the middle two for an even count."""
    ordered = values.double().sort().values
    n = len(ordered)
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2]).item()


def summarise_ranks(ranks: torch.Tensor, ks) -> dict:
    """R@K (percent), median and mean rank of (Q,) 1-based ranks."""
    ranks = ranks.double()
    out = {f"R@{k}": 100.0 * (ranks <= k).double().mean().item() for k in ks}
    out["median_rank"] = median(ranks)
    out["mean_rank"] = ranks.mean().item()
    return out


class CaptionGroups:
    """Captions grouped by image without an (N, max captions) table: O(N + M) memory.

    caption_image_index (M,) → `order` (M,) caption indices sorted by image and `start` (N + 1,) so
    that image i's captions are `order[start[i]:start[i + 1]]`.
    """

    def __init__(self, caption_image_index: torch.Tensor, num_images: int):
        self.index = caption_image_index
        self.order = torch.argsort(caption_image_index, stable=True)
        counts = torch.bincount(caption_image_index, minlength=num_images)
        self.start = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        self.counts = counts

    def of_rows(self, first: int, last: int) -> torch.Tensor:
        """Indices of the captions of images first..last-1 (sorted by image)."""
        return self.order[int(self.start[first]) : int(self.start[last])]


def tile_shape(num_images: int, num_captions: int, device: torch.device) -> tuple[int, int]:
    """(rows, cols) of one score tile: about `CHUNK_ELEMENTS` entries (more on CUDA)."""
    elements = CHUNK_ELEMENTS * (CUDA_CHUNK_FACTOR if device.type == "cuda" else 1)
    rows = max(1, min(num_images, TILE_ROWS, math.isqrt(elements)))
    return rows, max(1, min(num_captions, elements // rows))


def _positive_scores(image: torch.Tensor, text: torch.Tensor, groups: CaptionGroups, rows: int, cols: int):
    """(M,) score of each caption with its own image, on the same row blocks as the tiles, at most `cols`
    captions at a time (an image with very many captions stays within one tile's memory)."""
    positive = torch.empty(len(text), dtype=text.dtype, device=text.device)
    for first in range(0, len(image), rows):
        captions = groups.of_rows(first, min(first + rows, len(image)))
        for part in captions.split(cols):
            block = image[first : first + rows] @ text[part].T  # (rows, <= cols)
            positive[part] = block[groups.index[part] - first, torch.arange(len(part), device=part.device)]
    return positive


def ranks_both_ways(image: torch.Tensor, text: torch.Tensor, caption_image_index: torch.Tensor):
    """(N,) i2t ranks (0 for images without captions) and (M,) t2i ranks from one tiled pass.

    A cheap first pass scores each caption with its own image (its positive); the tiled pass then
    only counts, per image and per caption, the scores at least as high as its positive.
    """
    groups = CaptionGroups(caption_image_index, len(image))
    rows, cols = tile_shape(len(image), len(text), image.device)
    positive = _positive_scores(image, text, groups, rows, cols)  # (M,)
    best = torch.full((len(image),), float("-inf"), dtype=text.dtype, device=text.device)
    best.scatter_reduce_(0, caption_image_index, positive, reduce="amax")  # (N,) best own caption
    tied_own = torch.bincount(caption_image_index[positive == best[caption_image_index]], minlength=len(image))
    image_count = torch.zeros(len(image), dtype=torch.long, device=image.device)  # captions scoring >= best
    caption_count = torch.zeros(len(text), dtype=torch.long, device=text.device)  # images scoring >= positive
    own_score = torch.empty_like(positive)
    scores = torch.empty(rows * cols, dtype=text.dtype, device=text.device)  # reused: no allocation per tile
    at_least = torch.empty(rows * cols, dtype=torch.bool, device=text.device)
    tiles = [(r, c) for r in range(0, len(image), rows) for c in range(0, len(text), cols)]
    for r, c in tqdm(tiles, desc="retrieval", leave=False, disable=None):
        block, captions = image[r : r + rows], text[c : c + cols]
        shape = (len(block), len(captions))
        sims = torch.matmul(block, captions.T, out=scores[: shape[0] * shape[1]].view(shape))
        mask = at_least[: shape[0] * shape[1]].view(shape)
        image_count[r : r + rows] += torch.ge(sims, best[r : r + rows, None], out=mask).sum(1, dtype=torch.int32)
        caption_count[c : c + cols] += torch.ge(sims, positive[None, c : c + cols], out=mask).sum(0, dtype=torch.int32)
        owner = caption_image_index[c : c + cols] - r
        mine = torch.nonzero((owner >= 0) & (owner < shape[0])).squeeze(1)
        own_score[c + mine] = sims[owner[mine], mine]
    image_ranks = torch.where(tied_own > 0, image_count - tied_own + 1, 0)
    caption_ranks = caption_count - (own_score >= positive).long() + 1
    differs = torch.nonzero(own_score != positive).squeeze(1)
    if len(differs):  # a backend whose sums depend on the tile's columns: redo those from full rows
        caption_ranks[differs] = t2i_ranks_rowwise(image, text[differs], caption_image_index[differs])
        images = torch.unique(caption_image_index[differs])
        image_ranks[images] = i2t_ranks_rowwise(image, text, caption_image_index, images)
    return image_ranks, caption_ranks


def t2i_ranks_rowwise(image: torch.Tensor, text: torch.Tensor, caption_image_index: torch.Tensor) -> torch.Tensor:
    """(M',) rank of each caption's image, from blocks of full (rows, N) score rows."""
    ranks = torch.empty(len(text), dtype=torch.long, device=text.device)
    step = max(1, CHUNK_ELEMENTS // len(image))
    for first in range(0, len(text), step):
        sims = text[first : first + step] @ image.T  # (rows, N)
        positive = sims.gather(1, caption_image_index[first : first + step, None])
        ranks[first : first + step] = (sims >= positive).sum(dim=1)
    return ranks


def i2t_ranks_rowwise(image: torch.Tensor, text: torch.Tensor, caption_image_index, rows: torch.Tensor):
    """(N',) i2t rank of the images at `rows` (N',) of `image`, from blocks of full (rows, M) score rows."""
    ranks = torch.zeros(len(rows), dtype=torch.long, device=image.device)
    local = torch.full((len(image),), -1, dtype=torch.long, device=image.device)
    step = max(1, CHUNK_ELEMENTS // len(text))
    for first in range(0, len(rows), step):
        block = rows[first : first + step]
        local[block] = torch.arange(len(block), device=image.device)
        caps = torch.nonzero(local[caption_image_index] >= 0).squeeze(1)
        owner = local[caption_image_index[caps]]
        sims = image[block] @ text.T  # (rows, M)
        own = sims[owner, caps]
        best = torch.full((len(block),), float("-inf"), dtype=sims.dtype, device=sims.device)
        best.scatter_reduce_(0, owner, own, reduce="amax")
        tied = torch.zeros(len(block), dtype=torch.long, device=sims.device)
        tied.scatter_add_(0, owner, (own == best[owner]).long())
        ranks[first : first + step] = torch.where(tied > 0, (sims >= best[:, None]).sum(1) - tied + 1, 0)
        local[block] = -1
    return ranks


def _checked_inputs(image_emb, text_emb, caption_image_index, device):
    image = _as_tensor(image_emb, device=device)
    text = _as_tensor(text_emb, device=image.device)
    index = _as_tensor(caption_image_index, torch.long, device=image.device)
    if image.ndim != 2 or text.ndim != 2 or image.shape[1] != text.shape[1]:
        raise BadInput(
            f"retrieval: need (N, D) images and (M, D) captions, got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    if len(image) == 0 or len(text) == 0:
        raise BadInput(f"retrieval: nothing to rank ({len(image)} images, {len(text)} captions)")
    if index.shape != (len(text),):
        raise BadInput(f"retrieval: caption_image_index has shape {tuple(index.shape)}, expected ({len(text)},)")
    if index.min() < 0 or index.max() >= len(image):
        raise BadInput(f"retrieval: caption_image_index must lie in [0, {len(image)})")
    if not (torch.isfinite(image.sum()) and torch.isfinite(text.sum())):  # a reduction: no (M, D) temporary
        raise BadInput("retrieval: embeddings contain NaN or infinite values")
    return image, text, index


@torch.no_grad()
def retrieval_metrics(image_emb, text_emb, caption_image_index, ks=(1, 5, 10), device=None) -> dict:
    """Recall@K (percent) for `ks` and 1, 5, 10; median and mean rank both ways; rsum (the six recalls at 1, 5, 10).

    image_emb (N, D), text_emb (M, D): arrays or tensors, compared by dot product (pass normalised
    embeddings for cosine). caption_image_index (M,): row in image_emb of caption j's image.
    Runs on `device` (default: where image_emb is).
    """
    image, text, index = _checked_inputs(image_emb, text_emb, caption_image_index, device)
    return metrics_from_ranks(*ranks_both_ways(image, text, index), ks)


def metrics_from_ranks(image_ranks: torch.Tensor, caption_ranks: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """The metrics dict of (N,) i2t ranks (0 for an image without captions) and (M,) t2i ranks, 1-based."""
    ks = sorted(set(ks) | set(RSUM_KS))
    with_captions = image_ranks > 0
    i2t, t2i = summarise_ranks(image_ranks[with_captions], ks), summarise_ranks(caption_ranks, ks)
    return {
        "num_images": len(image_ranks),
        "num_captions": len(caption_ranks),
        "i2t": i2t,
        "t2i": t2i,
        "rsum": sum(i2t[f"R@{k}"] + t2i[f"R@{k}"] for k in RSUM_KS),
        "images_without_captions": int((~with_captions).sum().item()),
    }


def chance_recall(num_gallery: int, k: int, positives: int = 1) -> float:
    """Expected R@K (percent) of random scores: P(any of `positives` items among `num_gallery` is in the top K)."""
    miss = np.prod([(num_gallery - positives - i) / (num_gallery - i) for i in range(min(k, num_gallery - positives))])
    return 100.0 * (1.0 - miss) if k < num_gallery - positives + 1 else 100.0


def chance_median_rank(num_gallery: int, positives: int = 1) -> float:
    """Median rank of the best of `positives` items among `num_gallery` under random scores (exact).

    The rank R is the smallest of `positives` distinct uniform draws from 1..num_gallery, so
    P(R > r) = C(num_gallery - r, positives) / C(num_gallery, positives). As for an even count of ranks,
    the median is the midpoint of the smallest r with P(R <= r) >= 1/2 and the smallest with P(R <= r) > 1/2:
    (num_gallery + 1) / 2 for one positive.
    """
    total = math.comb(num_gallery, positives)

    def first(reached) -> int:  # smallest r in 1..num_gallery with reached(2 * C(num_gallery - r, positives))
        low, high = 1, num_gallery
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if reached(2 * math.comb(num_gallery - mid, positives)) else (mid + 1, high)
        return low

    return 0.5 * (first(lambda twice_above: twice_above <= total) + first(lambda twice_above: twice_above < total))
