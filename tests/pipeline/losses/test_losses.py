"""Losses: hand-computed values on 2x2/3x3 matrices, open_clip equality, image-id positives, queues, mixup."""

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss
from open_clip.loss import SigLipLoss as OpenSigLipLoss

from encoding.errors import BadInput
from pipeline import losses
from pipeline.losses.hard_negatives import negative_weights
from pipeline.losses.mixing import fusemix

EYE = torch.eye(2)
SOFTPLUS = lambda x: math.log1p(math.exp(x))  # noqa: E731  -log σ(-x)
CE_1_0 = math.log1p(math.exp(-1))  # −log softmax([1, 0])[0] = 0.313262
CE_0_1 = 1 + CE_1_0  # −log softmax([1, 0])[1] = 1.313262


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_registered_losses_and_defaults():
    assert set(losses.LOSSES.names()) >= {"clip", "siglip", "align", "blip", "infonce_queue"}
    assert losses.build("clip", temperature=0.05).scale().item() == pytest.approx(20.0)
    siglip = losses.build("siglip")
    assert siglip.scale().item() == pytest.approx(10.0)
    assert siglip.logit_scale.item() == pytest.approx(math.log(10))
    assert siglip.logit_bias.item() == -10.0
    assert losses.build("clip", temperature=0.001).scale().item() == pytest.approx(100.0)  # clamped


def test_clip_hand_computed():
    clip = losses.build("clip", temperature=1.0)
    # logits = I·Tᵀ = eye: each row is −log(e / (e + 1)) = log(1 + e⁻¹)
    assert clip(EYE, EYE).item() == pytest.approx(CE_1_0, abs=1e-6)
    # both rows show image 0: targets [½, ½] → ½ (CE_1_0 + CE_0_1) in both directions
    assert clip(EYE, EYE, torch.tensor([0, 0])).item() == pytest.approx(0.5 * (CE_1_0 + CE_0_1), abs=1e-6)


def test_siglip_hand_computed():
    siglip = losses.build("siglip", temperature=1.0, bias=0.0)
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # cosines [[1, .6], [0, .8]]
    # labels +1 on the diagonal, −1 off it; loss = Σ softplus(−z·logit) / B
    expected = (SOFTPLUS(-1) + SOFTPLUS(-0.8) + SOFTPLUS(0.6) + SOFTPLUS(0)) / 2
    assert siglip(EYE, text).item() == pytest.approx(expected, abs=1e-6)
    # one image: every pair is positive
    expected_same = (SOFTPLUS(-1) + SOFTPLUS(-0.8) + SOFTPLUS(-0.6) + SOFTPLUS(0)) / 2
    assert siglip(EYE, text, torch.tensor([4, 4])).item() == pytest.approx(expected_same, abs=1e-6)
    assert expected == pytest.approx(1.2074987, abs=1e-6) and expected_same == pytest.approx(0.9074987, abs=1e-6)


def test_align_label_smoothing_hand_computed():
    align = losses.build("align", temperature=1.0, label_smoothing=0.5)
    # targets (1 − ε)·eye + ε/B = [.75, .25] per row
    assert align(EYE, EYE).item() == pytest.approx(0.75 * CE_1_0 + 0.25 * CE_0_1, abs=1e-6)
    assert losses.build("align", label_smoothing=0.0)(EYE, EYE).item() == pytest.approx(
        losses.build("clip")(EYE, EYE).item()
    )


@pytest.mark.parametrize("batch,dim,scale", [(8, 16, 14.3), (5, 4, 100.0), (32, 64, 1.0)])
def test_clip_equals_open_clip(batch, dim, scale):
    image, text = unit(batch, dim, seed=1), unit(batch, dim, seed=2)
    ours = losses.build("clip", temperature=1 / scale)(image, text)
    reference = OpenClipLoss()(image, text, logit_scale=torch.tensor(scale))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("batch,dim,scale,bias", [(8, 16, 10.0, -10.0), (6, 4, 3.0, 1.5), (32, 64, 50.0, -2.0)])
def test_siglip_equals_open_clip(batch, dim, scale, bias):
    image, text = unit(batch, dim, seed=3), unit(batch, dim, seed=4)
    ours = losses.build("siglip", temperature=1 / scale, bias=bias)(image, text)
    reference = OpenSigLipLoss()(image, text, logit_scale=torch.tensor(scale), logit_bias=torch.tensor(bias))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["clip", "siglip", "align", "blip", "infonce_queue"])
def test_captions_of_one_image_are_positives(name):
    """Rows 0 and 1 show the same image: swapping their captions changes nothing with ids, something without."""
    image, text = unit(4, 6, seed=5), unit(4, 6, seed=6)
    ids, swapped = torch.tensor([7, 7, 8, 9]), text[[1, 0, 2, 3]]
    options = {"queue_size": 8} if name in ("blip", "infonce_queue") else {}
    with_ids = losses.build(name, **options)(image, text, ids)
    assert with_ids.item() == pytest.approx(losses.build(name, **options)(image, swapped, ids).item(), rel=1e-5)
    without = losses.build(name, **options)(image, text).item()
    assert without != pytest.approx(losses.build(name, **options)(image, swapped).item(), rel=1e-3)


def test_infonce_queue_hand_computed():
    loss = losses.build("infonce_queue", temperature=1.0, queue_size=4)
    assert loss(EYE, EYE, torch.tensor([0, 1])).item() == pytest.approx(CE_1_0, abs=1e-6)  # empty queue: CLIP
    # queue now holds eye with ids [0, 1]; new images 2, 3: row 0 logits [1, 0 | 1, 0], one positive
    assert loss(EYE, EYE, torch.tensor([2, 3])).item() == pytest.approx(math.log(2 * math.e + 2) - 1, abs=1e-6)
    # queue holds ids [0, 1, 2, 3]; ids [0, 0]: row 0 positives = batch 0, 1 and queued id 0 (logits 1, 0, 1)
    fresh = losses.build("infonce_queue", temperature=1.0, queue_size=4)
    fresh(EYE, EYE, torch.tensor([0, 1]))
    log_z = math.log(2 * math.e + 2)
    row0 = ((log_z - 1) + (log_z - 0) + (log_z - 1)) / 3
    row1 = ((log_z - 0) + (log_z - 1) + (log_z - 0)) / 3  # image [0, 1]: logits [0, 1 | 0, 1], positives 0, 1, 2
    assert fresh(EYE, EYE, torch.tensor([0, 0])).item() == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_blip_hand_computed_and_clip_limit():
    # α = 0, empty queue, momentum = online features: the CLIP loss at scale 1/τ
    image, text = unit(6, 8, seed=7), unit(6, 8, seed=8)
    blip = losses.build("blip", temperature=0.5, alpha=0.0, queue_size=12)
    assert blip(image, text).item() == pytest.approx(
        losses.build("clip", temperature=0.5)(image, text).item(), rel=1e-5
    )
    # α = 0.4 on eye at scale 2: targets .4·softmax([2, 0]) + .6·[1, 0]
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    targets = [0.4 * p[0] + 0.6, 0.4 * p[1]]
    expected = -(targets[0] * math.log(p[0]) + targets[1] * math.log(p[1]))
    blip = losses.build("blip", temperature=0.5, alpha=0.4, queue_size=4)
    assert blip(EYE, EYE).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.222290, abs=1e-5)


def test_blip_uses_momentum_features_and_queue():
    image, text = unit(4, 8, seed=9), unit(4, 8, seed=10)
    momentum = (unit(4, 8, seed=11), unit(4, 8, seed=12))
    a = losses.build("blip", queue_size=8)(image, text, momentum_features=momentum)
    b = losses.build("blip", queue_size=8)(image, text)
    assert a.item() != pytest.approx(b.item())
    blip = losses.build("blip", queue_size=8)
    blip(image, text, torch.arange(4), momentum_features=momentum)
    queued_image, queued_text, ids = blip.queue.keys()
    assert torch.equal(queued_image, momentum[0]) and torch.equal(queued_text, momentum[1])
    assert ids.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["blip", "infonce_queue"])
def test_queue_size_must_divide_by_batch(name):
    with pytest.raises(BadInput, match=r"loss.queue_size 10 must be a multiple of the batch size 4"):
        losses.build(name, queue_size=10)(unit(4, 3), unit(4, 3, seed=1))


def test_queue_state_round_trips_through_state_dict():
    loss = losses.build("infonce_queue", queue_size=8)
    loss(unit(4, 5), unit(4, 5, seed=1), torch.arange(4))
    restored = losses.build("infonce_queue", queue_size=8)
    restored.load_state_dict(loss.state_dict())
    image, text = unit(4, 5, seed=2), unit(4, 5, seed=3)
    assert restored(image, text).item() == pytest.approx(loss(image, text).item())


def test_negative_weights_hand_computed():
    cosine = torch.tensor([[1.0, 0.6, 0.0]])
    positives = torch.tensor([[True, False, False]])
    # two negatives, weights 2·softmax([.6, 0]) = [1.2913, 0.7087]; the positive keeps 1
    w = negative_weights(cosine, positives, beta=1.0)
    assert w.tolist()[0] == pytest.approx([1.0, 2 * math.exp(0.6) / (math.exp(0.6) + 1), 2 / (math.exp(0.6) + 1)])
    assert torch.equal(negative_weights(cosine, positives, beta=0.0), torch.ones(1, 3))


def test_hard_negative_clip_against_naive_loop():
    image, text, beta, scale = unit(5, 4, seed=13), unit(5, 4, seed=14), 2.0, 5.0
    ours = losses.build("clip", temperature=1 / scale, hard_negative_beta=beta)(image, text).item()

    def direction(a, b):
        total = 0.0
        for i in range(len(a)):
            sims = [float(a[i] @ b[k]) for k in range(len(b))]
            negatives = [k for k in range(len(b)) if k != i]
            z = sum(math.exp(beta * sims[k]) for k in negatives)
            weight = {k: len(negatives) * math.exp(beta * sims[k]) / z for k in negatives}
            denominator = math.exp(scale * sims[i]) + sum(weight[k] * math.exp(scale * sims[k]) for k in negatives)
            total += -(scale * sims[i] - math.log(denominator))
        return total / len(a)

    assert ours == pytest.approx(0.5 * (direction(image, text) + direction(text, image)), rel=1e-5)
    plain = losses.build("clip", temperature=1 / scale)(image, text).item()
    assert losses.build("clip", temperature=1 / scale, hard_negative_beta=0.0)(image, text).item() == plain


def test_hard_negative_siglip_weights_negative_terms():
    siglip = losses.build("siglip", temperature=1.0, bias=0.0, hard_negative_beta=1.0)
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # cosines [[1, .6], [0, .8]]; one negative per row → weight 1
    expected = (SOFTPLUS(-1) + SOFTPLUS(-0.8) + SOFTPLUS(0.6) + SOFTPLUS(0)) / 2
    assert siglip(EYE, text).item() == pytest.approx(expected, abs=1e-6)


def test_fusemix_mixes_both_modalities_alike():
    x = torch.randn(6, 4)
    ids = torch.tensor([0, 0, 1, 2, 3, 4])
    mixed_image, mixed_text, pair_ids = fusemix(x, x.clone(), ids, 10, 0.4, torch.Generator().manual_seed(0))
    assert torch.allclose(mixed_image, mixed_text)  # same λ and partner for both modalities
    again = fusemix(x, x.clone(), ids, 10, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], mixed_image) and torch.equal(again[2], pair_ids)
    # every mixed row lies on the segment between its row and one partner row, with one λ for the batch
    lams = set()
    for i in range(6):
        partner = int(pair_ids[i] % 10)
        row = (ids == partner).nonzero()[0, 0] if partner != int(ids[i]) else i
        lam = ((mixed_image[i] - x[row]) / (x[i] - x[row])).mean() if row != i else None
        if lam is not None:
            lams.add(round(float(lam), 4))
            assert torch.allclose(mixed_image[i], lam * x[i] + (1 - lam) * x[row], atol=1e-5)
    assert len(lams) == 1
    assert (pair_ids // 10).tolist() == ids.tolist()
