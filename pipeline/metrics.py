"""COCO-aware retrieval metrics (CLIP_benchmark's definition), computed in chunks.

t2i: a caption hits at K if its image is among its top K images.
i2t: an image hits at K if ANY of its captions is among its top K captions, so its rank is that of
its best-scoring caption. Every image and caption is in the gallery; images with no caption are
left out of i2t and counted. Ranks are 1-based; a gallery item scoring exactly as high as the
positive does not push it down (ties go to the query).
"""

import numpy as np
import torch

CHUNK_ELEMENTS = 1 << 24  # similarity entries per chunk: 64 MB of float32, whatever the gallery size


def _as_tensor(x, dtype=torch.float32, device=None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, device=device).to(dtype)


def _summary(ranks: torch.Tensor, ks) -> dict:
    ranks = ranks.double()
    out = {f"R@{k}": 100.0 * (ranks <= k).double().mean().item() for k in ks}
    out["median_rank"] = ranks.median().item() if len(ranks) % 2 else ranks.quantile(0.5).item()
    out["mean_rank"] = ranks.mean().item()
    return out


def _rows_per_chunk(gallery: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(gallery, 1))


def t2i_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_image_index: torch.Tensor) -> torch.Tensor:
    """(M,) rank of each caption's own image among all N images."""
    ranks = torch.empty(len(text_emb), dtype=torch.long, device=text_emb.device)
    step = _rows_per_chunk(len(image_emb))
    for start in range(0, len(text_emb), step):
        sims = text_emb[start : start + step] @ image_emb.T  # (c, N)
        positive = sims.gather(1, caption_image_index[start : start + step, None])
        ranks[start : start + step] = (sims > positive).sum(dim=1) + 1
    return ranks


def captions_by_image(caption_image_index: torch.Tensor, num_images: int) -> torch.Tensor:
    """(N, max captions per image) caption indices per image, padded with -1."""
    counts = torch.bincount(caption_image_index, minlength=num_images)
    order = torch.argsort(caption_image_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(order), device=order.device) - starts[caption_image_index[order]]
    table = torch.full(
        (num_images, int(counts.max().item()) if len(counts) else 0),
        -1,
        dtype=torch.long,
        device=caption_image_index.device,
    )
    table[caption_image_index[order], slot] = order
    return table


def i2t_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_image_index: torch.Tensor) -> torch.Tensor:
    """(N,) rank of each image's best caption among all M captions; images without captions get 0."""
    table = captions_by_image(caption_image_index, len(image_emb))
    ranks = torch.zeros(len(image_emb), dtype=torch.long, device=image_emb.device)
    step = _rows_per_chunk(len(text_emb))
    for start in range(0, len(image_emb), step):
        sims = image_emb[start : start + step] @ text_emb.T  # (c, M)
        own = table[start : start + step]
        scores = sims.gather(1, own.clamp(min=0)).masked_fill(own < 0, float("-inf"))
        best = scores.max(dim=1, keepdim=True).values
        has = own[:, 0] >= 0 if own.shape[1] else torch.zeros(len(own), dtype=torch.bool, device=own.device)
        ranks[start : start + step] = torch.where(has, (sims > best).sum(dim=1) + 1, 0)
    return ranks


@torch.no_grad()
def retrieval_metrics(image_emb, text_emb, caption_image_index, ks=(1, 5, 10), device=None) -> dict:
    """Recall@K (percent), median and mean rank both ways, and rsum (sum of all recalls).

    image_emb (N, D), text_emb (M, D): arrays or tensors, compared by dot product (pass normalised
    embeddings for cosine). caption_image_index (M,): row in image_emb of caption j's image.
    """
    image = _as_tensor(image_emb, device=device)
    text = _as_tensor(text_emb, device=image.device)
    index = _as_tensor(caption_image_index, torch.long, device=image.device)
    if image.shape[1] != text.shape[1]:
        raise ValueError(f"image dim {image.shape[1]} != text dim {text.shape[1]}")
    if len(index) != len(text):
        raise ValueError(f"caption_image_index has {len(index)} entries for {len(text)} captions")
    if len(index) and (index.min() < 0 or index.max() >= len(image)):
        raise ValueError(f"caption_image_index must lie in [0, {len(image)})")
    image_ranks = i2t_ranks(image, text, index)
    with_captions = image_ranks > 0
    i2t, t2i = _summary(image_ranks[with_captions], ks), _summary(t2i_ranks(image, text, index), ks)
    return {
        "num_images": len(image),
        "num_captions": len(text),
        "i2t": i2t,
        "t2i": t2i,
        "rsum": sum(i2t[f"R@{k}"] + t2i[f"R@{k}"] for k in ks),
        "images_without_captions": int((~with_captions).sum().item()),
    }


def chance_recall(num_gallery: int, k: int, positives: int = 1) -> float:
    """Expected R@K (percent) of random scores: P(any of `positives` items among `num_gallery` is in the top K)."""
    miss = np.prod([(num_gallery - positives - i) / (num_gallery - i) for i in range(min(k, num_gallery - positives))])
    return 100.0 * (1.0 - miss) if k < num_gallery - positives + 1 else 100.0
