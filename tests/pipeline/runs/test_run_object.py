"""The run object (`pipeline.open_run`): every run kind, rebuilt from its checkpoint alone, embeds a split as its
trainer did, and encodes raw captions and images as the cache stored them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encoding.commands import encode, split
from encoding.datasets.demo import build_demo
from encoding.errors import BadInput
from pipeline import open_run
from pipeline.config import backbone
from pipeline.config.experiment import from_dict
from pipeline.data.split_tensors import load_splits
from pipeline.search.searcher import Searcher
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.choice import trainer_for

VIT = {"library": "timm", "arch": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "hidden_dim": 32}
VIT["options"] = {"depth": 1, "embed_dim": 32, "num_heads": 2}
SCRATCH = {"library": "scratch", "max_length": 24, "options": {"width": 32, "heads": 2, "layers": 1}}
FUSION = {"num_layers": 1, "hidden_dim": 16, "num_heads": 2, "rerank_k": 4}
HEADS = {
    "head": {"type": "mlp", "hidden_dim": 16},
    "token_head": {"type": "attention_pool", "hidden_dim": 16, "num_heads": 2},
    "cross_encoder": {"type": "cross_encoder", "hidden_dim": 16, "num_heads": 2, "num_layers": 1, "rerank_k": 4},
}
BACKBONES = {
    "backbone": ({"library": "timm", **VIT}, {"type": "clip"}),
    "two_tower": ({**VIT, "text": SCRATCH}, {"type": "clip"}),
    "fused": ({**VIT, "text": SCRATCH, "fusion": FUSION}, {"type": "itm"}),
}


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory) -> Path:
    """24 demo scenes encoded with tokens: timm ResNet-18 (random init, 32 px) + the real MiniLM, split 12/6/6."""
    root = tmp_path_factory.mktemp("run_object")
    build_demo(root / "data", num_images=24)
    out = root / "cache"
    argv = ["--dataset", "demo", "--root", str(root / "data"), "--out", str(out), "--image-model", "timm:resnet18"]
    argv += ["--image-size", "32", "--text-model", "st:sentence-transformers/all-MiniLM-L6-v2", "--tokens"]
    assert encode.main([*argv, "--batch-size", "16", "--num-workers", "0"]) == 0
    assert split.main([str(out), "--val", "6", "--test", "6", "--seed", "0"]) == 0
    return out


def config_of(kind: str, cache: Path):
    training = {"device": "cpu", "batch_size": 8, "eval_batch_size": 5, "num_epochs": 1}
    if kind in HEADS:
        return from_dict(
            {
                "name": kind,
                "data": {"cache": str(cache)},
                "model": {**HEADS[kind], "output_dim": 8},
                "training": training,
            }
        )
    model, loss = BACKBONES[kind]
    data = {"cache": str(cache), "num_workers": 0}
    return backbone.from_dict({"name": kind, "data": data, "model": model, "loss": loss, "training": training})


def saved_trainer(kind: str, cache: Path, run_dir: Path):
    """A trainer of `kind` (untrained: its random start is as good a run as any) and its `best.pt` in `run_dir`."""
    torch.manual_seed(0)
    config = config_of(kind, cache)
    splits = load_splits(cache, ["train", "test"])
    trainer = trainer_for(config)(config, splits["train"], splits["test"])
    run_dir.mkdir(parents=True)
    save_checkpoint(trainer.checkpoint(), run_dir / "best.pt")
    return trainer, splits["test"]


@pytest.mark.parametrize("kind", [*HEADS, *BACKBONES])
def test_open_run_embeds_each_kind_as_its_training_did(kind, token_cache, tmp_path):
    trainer, test = saved_trainer(kind, token_cache, tmp_path / kind)
    run = open_run(tmp_path / kind)
    assert run.kind == kind and run.scores_pairs == (kind in ("cross_encoder", "fused"))
    assert run.checkpoint == tmp_path / kind / "best.pt" and run.cache_dir == token_cache
    image, text, index = run.embed_split(test)
    trained_image, trained_text = trainer.embed(test)
    torch.testing.assert_close(image, trained_image)
    torch.testing.assert_close(text, trained_text)
    assert torch.equal(index.cpu(), test.caption_image_index)
    assert torch.allclose(image.norm(dim=1), torch.ones(len(image))) and image.dtype == torch.float32
    if run.scores_pairs:
        rows, captions = torch.tensor([0, 1, 2]), torch.tensor([0, 3, 5])
        expected = trainer.run_model.pair_scorer(test)(rows, captions)
        torch.testing.assert_close(run.pair_scorer(test)(rows, captions), expected)
        assert trainer.evaluate(test) == trainer.test_metrics(test, image, text)


@pytest.mark.parametrize("kind", ["head", "token_head", "backbone", "two_tower"])
def test_raw_captions_and_images_encode_as_the_cache_stored_them(kind, token_cache, tmp_path):
    saved_trainer(kind, token_cache, tmp_path / kind)
    run = open_run(tmp_path / kind)
    test = load_splits(token_cache, ["test"])["test"]
    image, text, _ = run.embed_split(test)
    # fp16 storage of the cache's vectors and tokens is the only difference
    torch.testing.assert_close(run.encode_texts(list(test.captions)), text, atol=3e-3, rtol=0)
    images = [Image.open(path) for path in test.image_paths]
    torch.testing.assert_close(run.encode_images(images), image, atol=3e-3, rtol=0)


@pytest.mark.parametrize("kind", ["cross_encoder", "fused"])
def test_pair_scorers_score_raw_pairs_as_the_split_pairs(kind, token_cache, tmp_path):
    saved_trainer(kind, token_cache, tmp_path / kind)
    run = open_run(tmp_path / kind)
    test = load_splits(token_cache, ["test"])["test"]
    run.embed_split(test)
    rows = test.caption_image_index[:4]
    expected = run.pair_scorer(test)(rows, torch.arange(4))
    images = [Image.open(test.image_paths[r]) for r in rows]
    scores = run.score(images, [str(c) for c in test.captions[:4]])
    torch.testing.assert_close(scores, expected, atol=2e-2, rtol=0)


def test_a_backbone_that_cannot_be_rebuilt_is_refused_only_for_raw_queries(token_cache, tmp_path):
    trainer, test = saved_trainer("head", token_cache, tmp_path / "head")
    run = open_run(tmp_path / "head")
    run.frozen.meta["text_model"]["spec"] = "st:/no/such/model"
    run.embed_split(test)  # the cache's vectors need no backbone
    with pytest.raises(BadInput, match="text backbone 'st:/no/such/model' cannot be loaded here"):
        run.encode_texts(["a cat"])
    with pytest.raises(BadInput, match="does not score pairs"):
        run.pair_scorer(test)


def test_open_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(BadInput, match="no checkpoint"):
        open_run(tmp_path)
    save_checkpoint({"weights": np.zeros(2).tolist()}, tmp_path / "best.pt")
    with pytest.raises(BadInput, match="not a checkpoint of `xalign train`"):
        open_run(tmp_path)


@pytest.mark.parametrize("kind", ["cross_encoder", "fused"])
def test_search_re_ranks_the_dual_top_k_by_the_match_head(kind, token_cache, tmp_path):
    saved_trainer(kind, token_cache, tmp_path / kind)
    searcher = Searcher.open(tmp_path / kind)
    run, test = searcher.run, searcher.opened.data
    image, text, _ = run.embed_split(test)
    score_pairs = run.pair_scorer(test)
    caption = str(test.captions[0])
    top = (image @ run.encode_texts([caption])[0]).topk(run.rerank_k).indices  # the dual top K of the query
    logits = score_pairs(top, torch.zeros_like(top))  # caption 0 against them, as evaluate re-ranks
    order = logits.argsort(descending=True)[:3]
    hits = searcher.search_text(caption, k=3)
    assert [h["id"] for h in hits] == [test.image_ids[int(top[o])] for o in order]
    torch.testing.assert_close(torch.tensor([h["score"] for h in hits]), logits[order], atol=2e-2, rtol=0)
    picture = Image.open(test.image_paths[1])
    top = (text @ run.encode_images([picture])[0]).topk(run.rerank_k).indices
    logits = score_pairs(torch.ones_like(top), top)
    order = logits.argsort(descending=True)[:3]
    hits = searcher.search_image(picture, k=3, target="captions")
    assert [h["captions"] for h in hits] == [[str(test.captions[int(top[o])])] for o in order]
