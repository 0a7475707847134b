"""ITM loss: hand-computed ITC + BCE values, and ALBEF's in-batch hard-negative sampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from encoding.errors import BadInput
from pipeline import losses
from pipeline.losses.itm import hard_negatives, itm_pairs

EYE = torch.eye(2)
CE_1_0 = math.log1p(math.exp(-1))  # −log softmax([1, 0])[0]
IDS = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_registered_with_its_defaults():
    assert "itm" in losses.LOSSES.names()
    loss = losses.build("itm")
    assert loss.scale().item() == pytest.approx(1 / 0.07) and loss.itc_weight == 1.0
    with pytest.raises(BadInput, match=r"'loss.itc_weight': expected a finite number >= 0"):
        losses.build("itm", itc_weight=-1.0)


def test_itc_plus_bce_hand_computed():
    loss = losses.build("itm", temperature=1.0, itc_weight=0.5)
    logits, labels = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0])
    # BCE: −log σ(0) = log 2, −log(1 − σ(2)) = log(1 + e²), −log(1 − σ(−1)) = log(1 + e⁻¹); mean of the three
    bce = (math.log(2) + math.log1p(math.exp(2)) + math.log1p(math.exp(-1))) / 3
    value = loss(EYE, EYE, match_logits=logits, match_labels=labels).item()
    assert value == pytest.approx(0.5 * CE_1_0 + bce, abs=1e-6)
    assert bce == pytest.approx(1.044446, abs=1e-6)  # (0.693147 + 2.126928 + 0.313262) / 3
    assert loss(EYE, EYE).item() == pytest.approx(0.5 * CE_1_0, abs=1e-6)  # no pairs: ITC only


def test_without_match_logits_it_is_the_clip_loss_with_image_ids():
    image, text, ids = unit(6, 5, seed=1), unit(6, 5, seed=2), torch.tensor([0, 0, 1, 2, 2, 3])
    clip = losses.build("clip", temperature=0.1)(image, text, ids)
    assert losses.build("itm", temperature=0.1)(image, text, ids).item() == pytest.approx(clip.item(), rel=1e-6)


def test_match_logits_and_labels_come_together():
    with pytest.raises(ValueError, match=r"itm loss: pass match_logits and match_labels together, or neither"):
        losses.build("itm")(EYE, EYE, match_logits=torch.zeros(2))


@pytest.mark.parametrize("seed", range(5))
def test_negatives_never_share_the_image_id(seed):
    similarity = unit(8, 4, seed=seed) @ unit(8, 4, seed=seed + 10).T
    negative_caption, negative_image = hard_negatives(similarity, IDS, torch.Generator().manual_seed(seed), 5.0)
    assert negative_caption.dtype == torch.long and negative_caption.shape == (8,) and negative_image.shape == (8,)
    assert (IDS[negative_caption] != IDS).all() and (IDS[negative_image] != IDS).all()
    rows, cols, labels = itm_pairs(similarity, IDS, torch.Generator().manual_seed(seed), 5.0)
    assert torch.equal(rows[:16], torch.arange(8).repeat(2)) and torch.equal(cols[:8], torch.arange(8))
    assert torch.equal(cols[8:16], negative_caption) and torch.equal(rows[16:], negative_image)
    assert torch.equal(labels, torch.cat([torch.ones(8), torch.zeros(16)]))


def test_a_seeded_generator_reproduces_the_draw():
    similarity = unit(8, 4, seed=1) @ unit(8, 4, seed=2).T
    draws = [hard_negatives(similarity, None, torch.Generator().manual_seed(s)) for s in (7, 7, 8, 9)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert any(not torch.equal(draws[0][0], d[0]) for d in draws[2:])


def test_a_sharply_peaked_similarity_picks_the_hardest_negative():
    batch = 6
    similarity = 0.1 * unit(batch, batch, seed=3)
    hardest = (torch.arange(batch) + 2) % batch  # image i's hardest caption; caption j's hardest image is j − 2
    similarity[torch.arange(batch), hardest] = 0.9
    similarity.fill_diagonal_(1.0)  # the positives score highest and are never drawn
    negative_caption, negative_image = hard_negatives(similarity, None, torch.Generator().manual_seed(0), 1000.0)
    assert torch.equal(negative_caption, hardest) and torch.equal(negative_image, (torch.arange(batch) - 2) % batch)


def test_draws_follow_the_softmax_over_the_negatives():
    # image 0: captions 1 and 2 are its negatives with weights softmax([log 3, 0]) = [3/4, 1/4]
    similarity = torch.tensor([[9.0, math.log(3), 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]])
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([hard_negatives(similarity, None, g)[0][0] for _ in range(2000)])
    assert (picks == 1).float().mean().item() == pytest.approx(0.75, abs=0.04) and (picks != 0).all()


def test_a_row_without_negatives_falls_back_to_itself_labelled_positive():
    similarity = unit(4, 3, seed=4) @ unit(4, 3, seed=5).T
    ids = torch.tensor([5, 5, 5, 5])
    negative_caption, negative_image = hard_negatives(similarity, ids, torch.Generator().manual_seed(0))
    assert torch.equal(negative_caption, torch.arange(4)) and torch.equal(negative_image, torch.arange(4))
    assert torch.equal(itm_pairs(similarity, ids, torch.Generator().manual_seed(0))[2], torch.ones(12))
    mixed = torch.tensor([5, 5, 5, 6])  # rows 0–2 have one negative each (row 3), row 3 has three
    negative_caption, _ = hard_negatives(similarity, mixed, torch.Generator().manual_seed(0))
    assert negative_caption[:3].tolist() == [3, 3, 3] and negative_caption[3].item() in (0, 1, 2)
