"""ITM loss: contrastive alignment plus binary image-text matching on hard negatives (ALBEF).

Li et al., 2021, "Align before Fuse": loss = itc_weight · ITC + BCE(match_logits, match_labels).
ITC is the CLIP loss (symmetric InfoNCE at logit scale s = 1/temperature, learnable, multi-positive
image-id targets; `hard_negative_beta` reweights as in `clip`) on the dual-encoder features; the
matching term is binary cross-entropy with logits on a cross-encoder's scores of image-caption pairs.
Inputs: image_features (B, D), text_features (B, D), L2-normalised; image_ids (B,) or None;
match_logits (P,) and match_labels (P,) float 0/1, both or neither (neither: ITC only).

The pairs to match come from `itm_pairs`: the B positive pairs, and for each image one caption and
for each caption one image drawn by `hard_negatives` (ALBEF's in-batch hard-negative sampling).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.losses import LOSSES, LossOptions, ScaledLoss, same_image
from pipeline.losses.clip import symmetric_cross_entropy


@dataclass(frozen=True)
class ItmOptions(LossOptions):
    temperature: float = 0.07  # initial ITC temperature; learned unless model.learnable_temp is false
    itc_weight: float = 1.0  # weight of the contrastive term; the matching term has weight 1


@torch.no_grad()
def hard_negatives(
    similarity: torch.Tensor, image_ids: torch.Tensor | None, generator: torch.Generator | None, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative caption of each image (B,), negative image of each caption (B,)), both long.

    similarity (B, B): image i against caption j (caption j belongs to image row j). Row i draws one
    caption with probability softmax(scale · similarity[i]) over the captions of other images (same
    image id = weight 0), column j likewise one image; one `torch.multinomial` draw per row with
    `generator` (a CPU generator: the weights are moved to the CPU). A row with no caption of another
    image (every row shows the same image) falls back to its own index i, deterministically; its pair is
    then a positive, and `itm_pairs` labels it so.
    """
    batch = similarity.shape[0]
    same = same_image(image_ids, batch, similarity.device).cpu()
    logits = scale * similarity.detach().float().cpu()

    def draw(rows: torch.Tensor) -> torch.Tensor:
        weights = rows.masked_fill(same, float("-inf")).softmax(dim=1)
        stuck = same.all(dim=1)
        weights[stuck] = torch.eye(batch)[stuck]
        return torch.multinomial(weights, 1, generator=generator).squeeze(1).to(similarity.device)

    return draw(logits), draw(logits.T)


def itm_pairs(
    similarity: torch.Tensor, image_ids: torch.Tensor | None, generator: torch.Generator | None, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image rows (3B,), caption rows (3B,), labels (3B,) float) of the pairs a cross-encoder scores:
    the B positives, each image with its hard-negative caption, each caption with its hard-negative
    image (`hard_negatives`). Labels are 1 where the two rows show the same image (ids compared, so a
    fallback pair is labelled positive), else 0."""
    batch, device = similarity.shape[0], similarity.device
    negative_caption, negative_image = hard_negatives(similarity, image_ids, generator, scale)
    rows = torch.arange(batch, device=device)
    images = torch.cat([rows, rows, negative_image])
    captions = torch.cat([rows, negative_caption, rows])
    labels = same_image(image_ids, batch, device)[images, captions].float()
    return images, captions, labels


@LOSSES.register("itm")
class ItmLoss(ScaledLoss):
    def __init__(self, options: ItmOptions, learnable_temperature: bool = True):
        super().__init__(options.temperature, learnable_temperature)
        self.itc_weight, self.hard_negative_beta = options.itc_weight, options.hard_negative_beta

    def forward(self, image_features, text_features, image_ids=None, match_logits=None, match_labels=None):
        if (match_logits is None) != (match_labels is None):
            raise ValueError("itm loss: pass match_logits and match_labels together, or neither")
        cosine = image_features @ text_features.T
        loss = self.itc_weight * symmetric_cross_entropy(cosine, self.scale(), image_ids, self.hard_negative_beta)
        if match_logits is None:
            return loss
        return loss + F.binary_cross_entropy_with_logits(match_logits.float(), match_labels.float())
