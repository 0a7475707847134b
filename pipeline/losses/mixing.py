"""Latent mixup for frozen-encoder features (FuseMix; Vouitsis et al., 2024, "Data-Efficient
Multimodal Fusion on a Single GPU").

FuseMix mixes the *inputs* of the heads (the cached encoder latents) with one λ ~ Beta(α, α) per batch
and the same partner permutation for both modalities: x̃ = λ x + (1 − λ) x[π], ỹ = λ y + (1 − λ) y[π].
The mixed pairs replace the batch. A mixed row is a new pair whose "image" is the pair (id, id[π]),
so two mixed rows are positives exactly when both their sources show the same images. The engine
applies it before the heads when `loss.mixup_alpha` > 0, so it works with every head and loss.
"""

import numpy as np
import torch


def fusemix(
    image_inputs: torch.Tensor,
    text_inputs: torch.Tensor,
    image_ids: torch.Tensor,
    id_count: int,
    alpha: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixed (B, D_img) images, (B, D_txt) captions and (B,) int64 ids of the mixed pairs.

    `image_ids` are integers in [0, id_count); a mixed pair's id is id · id_count + id[π], the same on
    every DDP rank. `generator` lives on the CPU; the permutation and λ are drawn from it, so runs
    (and ranks) draw the same.
    """
    batch = len(image_inputs)
    lam = _beta(alpha, generator)
    partner = torch.randperm(batch, generator=generator).to(image_inputs.device)
    mixed_image = lam * image_inputs + (1 - lam) * image_inputs[partner]
    mixed_text = lam * text_inputs + (1 - lam) * text_inputs[partner]
    return mixed_image, mixed_text, image_ids * id_count + image_ids[partner]


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(α, α), seeded from `generator`."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))
