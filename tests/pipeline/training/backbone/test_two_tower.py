"""Two-tower backbone training on the real demo cache: each tiny recipe trains an epoch, resumes exactly,
locks what it should, and its checkpoint encodes both towers into a cache with the run's own metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from backbone_configs import TINY_VIT, straight_and_resumed, write_config
from text_towers import SCRATCH, hf_text, tiny_distilbert, tiny_longformer

from encoding import cache
from encoding.backbones.text_architecture import resolve_text_architecture
from encoding.backbones.text_encoder import build_text_encoder, text_tokenizer
from encoding.commands import split
from encoding.errors import BadInput
from pipeline import cli
from pipeline.commands import backbone_train
from pipeline.config.backbone import from_dict
from pipeline.config.experiment import load_config
from pipeline.evaluation.metrics import retrieval_metrics
from pipeline.training.fusion import FusedTwoTowerTrainer
from pipeline.training.two_tower import TwoTowerTrainer


@pytest.fixture(scope="module")
def distilbert(tmp_path_factory):
    return tiny_distilbert(tmp_path_factory.mktemp("distilbert"))


@pytest.fixture(scope="module")
def longformer(tmp_path_factory):
    return tiny_longformer(tmp_path_factory.mktemp("longformer"))


def two_tower(text: dict, **model) -> dict:
    return {**TINY_VIT, "output_dim": 16, "text": text, **model}


def run_dir(tmp_path, name="tiny"):
    return tmp_path / "results" / name


TEXT_TOWERS = {  # the `model.text` of each tower, given the tiny towers' folders
    "scratch": lambda folders: SCRATCH,
    "distilbert": lambda folders: hf_text(folders["distilbert"], pretrained=False),
    "distilbert-mean": lambda folders: hf_text(folders["distilbert"], pooling="mean"),
    "longformer": lambda folders: hf_text(folders["longformer"], attention="sparse"),
}


@pytest.fixture(scope="module")
def one_epoch_run(demo_cache, distilbert, longformer, tmp_path_factory):
    """`one_epoch_run(tower)`: (run directory, model.text) of a one-epoch two-tower run with a `TEXT_TOWERS`
    tower, trained once per module for the tests that only read it."""
    folders, runs = {"distilbert": distilbert, "longformer": longformer}, {}

    def run(tower: str) -> tuple[Path, dict]:
        if tower not in runs:
            root, text = tmp_path_factory.mktemp(tower), TEXT_TOWERS[tower](folders)
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(root)
                assert backbone_train.main([str(write_config(root / "c.yaml", demo_cache, two_tower(text)))]) == 0
            runs[tower] = run_dir(root), text
        return runs[tower]

    return run


@pytest.mark.parametrize("tower", list(TEXT_TOWERS))
def test_one_epoch_of_each_text_library(one_epoch_run, tower):
    run, text = one_epoch_run(tower)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 12 and metrics["num_captions"] == 60 and metrics["rsum"] > 0
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["text_architecture"]["library"] == text["library"] and best["architecture"]["output_dim"] == 16
    info = json.loads((run / "run_info.json").read_text())
    assert info["inference_ms_per_1000_queries"] > 0


def test_resume_continues_exactly(demo_cache, tmp_path, monkeypatch):
    """Two epochs straight equal one epoch, a kill, and `--resume` (tokenised in 2 workers the second time)."""
    a, b = straight_and_resumed(tmp_path, demo_cache, two_tower(SCRATCH), monkeypatch, TwoTowerTrainer)
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    for part in ("encoder", "text_encoder"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)


def test_lit_locks_the_image_tower_and_last_n_locks_early_text_layers(demo_cache, distilbert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = hf_text(distilbert, trainable="last_1")
    config = write_config(tmp_path / "c.yaml", demo_cache, two_tower(text, trainable="none"))
    start = {}
    init = TwoTowerTrainer.build_model

    def remember_start(self):
        model = init(self)
        start.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(TwoTowerTrainer, "build_model", remember_start)
    assert backbone_train.main([str(config)]) == 0
    last = torch.load(run_dir(tmp_path) / "last.pt", weights_only=True)
    trunk = {k: v for k, v in last["encoder"].items() if k.startswith("trunk.")}
    assert trunk and all(torch.equal(v, start[f"image.{k}"]) for k, v in trunk.items())  # BN stats too
    assert not torch.equal(last["encoder"]["head.0.weight"], start["image.head.0.weight"])
    text_state = last["text_encoder"]
    first, second = "tower.model.transformer.layer.0.", "tower.model.transformer.layer.1."
    assert all(torch.equal(v, start[f"text.{k}"]) for k, v in text_state.items() if k.startswith(first))
    assert all(torch.equal(v, start[f"text.{k}"]) for k, v in text_state.items() if ".embeddings." in k)
    changed = [k for k, v in text_state.items() if k.startswith(second) and not torch.equal(v, start[f"text.{k}"])]
    assert changed


@pytest.mark.parametrize("tower", ["scratch", "distilbert"])
def test_encode_both_towers_from_the_checkpoint_closes_the_loop(
    demo_cache, tmp_path, monkeypatch, one_epoch_run, tower
):
    """A cache encoded with the run's two towers retrieves as the run did on its test split (to 0.1 rsum)."""
    run_path, _ = one_epoch_run(tower)
    monkeypatch.chdir(tmp_path)
    checkpoint = run_path / "best.pt"
    root = cache.read_metadata(demo_cache)["dataset"]["root"]
    out = tmp_path / "encoded"
    argv = ["encode", "--dataset", "demo", "--root", root, "--out", str(out), "--num-workers", "0"]
    assert (
        cli.main([*argv, "--image-model", str(checkpoint), "--text-model", str(checkpoint), "--shard-size", "30"]) == 0
    )
    assert split.main([str(out), "--val", "12", "--test", "12", "--tuning", "20", "--seed", "0"]) == 0
    assert cache.read_splits(out)["test"] == cache.read_splits(demo_cache)["test"]  # the run's test images
    assert cli.main(["evaluate", "--cache", str(out), "--split", "test"]) == 0
    run = json.loads((run_path / "metrics.json").read_text())
    encoded = json.loads((out / "metrics-test.json").read_text())
    assert encoded["rsum"] == pytest.approx(run["rsum"], abs=0.1)
    assert cache.read_metadata(out)["text_model"]["dim"] == 16


def tokenizer_less_copy(folder, tmp_path):
    """`folder`'s model files without its tokenizer files."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((folder / name).read_bytes())
    return bare


@pytest.mark.parametrize(
    ("text", "model", "message"),
    [
        ({"library": "gensim"}, {}, "model.text.library: unknown text library 'gensim'; choose one of: hf, open_clip"),
        ({**SCRATCH, "arch": "gpt"}, {}, "'model.text.arch': library 'scratch' builds 'clip'"),
        ({**SCRATCH, "attention": "local"}, {}, "'model.text.attention': 'local' is not one of self, sparse"),
        ({**SCRATCH, "attention": "sparse"}, {}, "attends densely; sparse needs an hf model of type longformer"),
        ({**SCRATCH, "pooling": "mean"}, {}, "'model.text.pooling': library 'scratch' pools by eos"),
        ({**SCRATCH, "options": {"depth": 2}}, {}, "'model.text.options.depth': scratch takes width, heads, layers"),
        ({**SCRATCH, "pretrained": True}, {}, "'model.text.pretrained': hf only"),
        ({**SCRATCH, "trainable": "first_2"}, {}, "'model.text.trainable': expected all, none or last_N"),
        ({**SCRATCH, "trainable": "last_3"}, {}, "'model.text.trainable': last_3 is more than the tower's 2 blocks"),
        (SCRATCH, {"trainable": "some"}, "'model.trainable': expected all, none or last_N"),
        ({"library": "open_clip", "arch": "ViT-Q-99"}, {}, "open_clip has no architecture 'ViT-Q-99'"),
        (("distilbert", {"attention": "sparse"}), {}, "attends densely; sparse needs an hf model of type longformer"),
        (("longformer", {}), {}, "attends sparsely; set attention: sparse"),
        (("distilbert", {"max_length": 65}), {}, "'model.text.max_length': 65 is beyond"),
        (("longformer", {"attention": "sparse", "max_length": 65}), {}, "'model.text.max_length': 65 is beyond"),
        (("distilbert", {"options": {"n_layers": 1}}), {}, "'model.text.options': changes the architecture"),
        (("distilbert", {"pretrained": False, "options": {"layers": 1}}), {}, "has no config key 'layers'"),
        (("distilbert-without-tokenizer", {}), {}, "'model.text.arch': no tokenizer in"),
        (("missing-dir", {}), {}, "'model.text.arch': cannot load a transformers config from"),
    ],
)
def test_bad_text_towers_exit_2_naming_the_key(
    demo_cache, tmp_path, monkeypatch, capsys, request, text, model, message
):
    if isinstance(text, tuple):  # an hf tower: (its folder, its model.text keys)
        name, keys = text
        if name == "missing-dir":
            folder = tmp_path / "nowhere"
        elif name == "distilbert-without-tokenizer":
            folder = tokenizer_less_copy(request.getfixturevalue("distilbert"), tmp_path)
        else:
            folder = request.getfixturevalue(name)
        text = hf_text(folder, **keys)
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", demo_cache, two_tower(text, **model))
    assert cli.main(["backbone-train", str(config)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results" / "tiny" / "last.pt").exists()


def test_a_frozen_text_run_evaluates_but_cannot_change_the_shared_width_or_encode_text(
    demo_cache, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", demo_cache, {**TINY_VIT, "output_dim": 16})
    assert cli.main(["backbone-train", str(config)]) == 2
    assert "'model.output_dim': 16, but the frozen caption embeddings" in capsys.readouterr().err
    config = write_config(tmp_path / "c.yaml", demo_cache, TINY_VIT)
    assert cli.main(["backbone-train", str(config)]) == 0
    trained = json.loads((run_dir(tmp_path) / "metrics.json").read_text())
    (run_dir(tmp_path) / "stale.txt").write_text("left by an earlier run")
    assert cli.main(["backbone-train", str(config), "--overwrite", "--set", "model.trainable=last_99"]) == 2
    assert (run_dir(tmp_path) / "best.pt").is_file()  # a refused config deletes nothing
    assert cli.main(["backbone-train", str(config), "--overwrite"]) == 0
    assert not (run_dir(tmp_path) / "stale.txt").exists()  # a run that is built replaces the old one
    assert cli.main(["evaluate", str(run_dir(tmp_path)), "--out", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["rsum"] == pytest.approx(trained["rsum"], abs=1e-6)
    checkpoint = str(run_dir(tmp_path) / "best.pt")
    root = cache.read_metadata(demo_cache)["dataset"]["root"]
    argv = ["encode", "--dataset", "demo", "--root", root, "--out", str(tmp_path / "enc"), "--image-model", checkpoint]
    assert cli.main([*argv, "--text-model", checkpoint]) == 2
    assert "trained the image encoder alone against frozen caption embeddings" in capsys.readouterr().err


def test_tune_runs_trials_of_a_two_tower_backbone_config(demo_cache, tmp_path, monkeypatch, capsys):
    """Two trials over a two-tower base config (seed 003 tunes CLIP from scratch), one sampling a text key."""
    monkeypatch.chdir(tmp_path)
    base = yaml.safe_load(write_config(tmp_path / "base.yaml", demo_cache, two_tower(SCRATCH)).read_text())
    optuna_config = {
        "study_name": "two_tower",
        "base_config": base,
        "search_space": {
            "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "model.text.max_length": {"type": "categorical", "choices": [16, 24]},
            "model.output_dim": {"type": "categorical", "choices": [16, 32]},
        },
        "n_trials": 2,
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(optuna_config))
    assert cli.main(["tune", str(tmp_path / "tune.yaml")]) == 0
    assert "train it: xalign backbone-train results/optuna/two_tower/best_config.yaml" in capsys.readouterr().out
    best = yaml.safe_load((tmp_path / "results/optuna/two_tower/best_config.yaml").read_text())
    assert best["model"]["text"]["max_length"] in (16, 24) and best["model"]["text"]["library"] == "scratch"
    assert cli.main(["backbone-train", "results/optuna/two_tower/best_config.yaml"]) == 0
    bad = {**optuna_config, "search_space": {"model.text.layers": {"type": "categorical", "choices": [1, 2]}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert cli.main(["tune", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown config key 'model.text.layers'" in capsys.readouterr().err


RECIPES = sorted((Path(__file__).parents[4] / "configs" / "two_tower").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_are_valid_and_the_demo_ones_resolve_offline(path):
    config = load_config(path, [], validate=from_dict)
    assert config.model.text is not None and config.name == path.stem
    if path.stem.startswith("demo_"):
        architecture = resolve_text_architecture(config.model.text.tower(), config.model.output_dim)
        encoder = build_text_encoder(architecture)
        ids, mask = text_tokenizer(architecture)(["a big red 3 with a small blue 7 in the top left corner"])
        assert encoder(ids, mask).shape == (1, config.model.output_dim)


def test_an_open_clip_text_tower_is_the_models_own_with_its_tokenizer():
    """`library: open_clip` takes the model's text tower (same weights as `encode_text` when built alike)."""
    import open_clip

    values = {"library": "open_clip", "arch": "RN50", "pretrained": None, "tokenizer": None, "attention": "self"}
    architecture = resolve_text_architecture({**values, "pooling": None, "max_length": 77, "options": {}}, 1024)
    torch.manual_seed(0)
    encoder = build_text_encoder(architecture).eval()
    torch.manual_seed(0)
    reference = open_clip.create_model("RN50", force_custom_text=True).eval()
    ids, mask = text_tokenizer(architecture)(["a red 3", "a big blue 7 in the top left corner"])
    assert ids.shape == (2, 77) and mask.sum(1).tolist() == [5, 11]  # start, words, end
    with torch.no_grad():
        assert torch.allclose(encoder(ids, mask), reference.encode_text(ids), atol=1e-5)
    with pytest.raises(BadInput, match="'model.text.max_length': 78 is beyond 'RN50''s 77 positions"):
        resolve_text_architecture({**values, "pooling": None, "max_length": 78, "options": {}}, 1024)


FUSION = {"num_layers": 1, "hidden_dim": 16, "num_heads": 2, "rerank_k": 4}


def test_the_cross_attention_variant_trains_with_itm_and_resumes_exactly(demo_cache, tmp_path, monkeypatch):
    """Fusion layers over the ViT's tokens and the text tower's states: loss itm by default, hard negatives
    drawn per epoch, so a killed and resumed run ends with the same towers and fusion weights."""
    model = two_tower(SCRATCH, fusion=FUSION)
    a, b = straight_and_resumed(
        tmp_path, demo_cache, model, monkeypatch, FusedTwoTowerTrainer, loss={"temperature": 0.07}
    )
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    for part in ("encoder", "text_encoder", "fusion"):
        assert a[part] and all(torch.equal(v, b[part][k]) for k, v in a[part].items()), part
    run = run_dir(tmp_path, "straight")
    assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["type"] == "itm"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_captions"] == 60 and metrics["rsum"] > 0
    assert json.loads((run / "run_info.json").read_text())["inference_ms_per_1000_queries"] > 0


def test_the_fused_ranking_differs_from_the_dual_ranking_only_in_the_top_k(demo_cache, tmp_path, monkeypatch):
    """Validation re-ranks the dual top K with the match logits: R@K beyond `rerank_k` is the dual's."""
    monkeypatch.chdir(tmp_path)
    model = two_tower(SCRATCH, fusion={**FUSION, "rerank_k": 2})
    config = write_config(tmp_path / "c.yaml", demo_cache, model, loss={"type": "itm"})
    trainer = None
    init = FusedTwoTowerTrainer.__init__

    def keep(self, *args, **kwargs):
        nonlocal trainer
        init(self, *args, **kwargs)
        trainer = self

    monkeypatch.setattr(FusedTwoTowerTrainer, "__init__", keep)
    assert backbone_train.main([str(config)]) == 0
    image, text = trainer.embed(trainer.val)
    fused = trainer.test_metrics(trainer.val, image, text)
    dual = retrieval_metrics(image, text, trainer.val.caption_image_index)
    for direction in ("i2t", "t2i"):
        assert fused[direction]["R@5"] == dual[direction]["R@5"] and fused[direction]["R@10"] == dual[direction]["R@10"]


@pytest.mark.parametrize(
    ("model", "loss", "message"),
    [
        ({**TINY_VIT, "fusion": FUSION}, None, "'model.fusion': reads a text tower's hidden states; add model.text"),
        (two_tower(SCRATCH, fusion=FUSION), "clip", "'loss.type': 'clip' with model.fusion"),
        (two_tower(SCRATCH), "itm", "'loss.type': 'itm' without model.fusion"),
        (two_tower(SCRATCH, fusion={**FUSION, "hidden_dim": 15}), None, "must divide by num_heads 2"),
    ],
)
def test_fusion_and_its_loss_go_together(demo_cache, tmp_path, monkeypatch, capsys, model, loss, message):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", demo_cache, model)
    values = yaml.safe_load(config.read_text())
    values["loss"] = {"type": loss} if loss else {"temperature": 0.05}
    config.write_text(yaml.safe_dump(values))
    assert cli.main(["backbone-train", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_rebuilds_backbone_runs_and_reranks_a_dual_run_with_the_fusion_layers(
    demo_cache, tmp_path, monkeypatch, capsys, one_epoch_run
):
    """`xalign evaluate` on backbone runs equals their own test metrics; a fused run re-ranks the top K of
    a two-tower dual run of the same cache and split (`--rerank-with`), and nothing else."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(one_epoch_run("scratch")[0], run_dir(tmp_path, "dual"))  # a dual run of two_tower(SCRATCH)
    fused = write_config(
        tmp_path / "f.yaml", demo_cache, two_tower(SCRATCH, fusion=FUSION), name="fused", loss={"type": "itm"}
    )
    assert backbone_train.main([str(fused)]) == 0
    for name in ("dual", "fused"):
        trained = json.loads((run_dir(tmp_path, name) / "metrics.json").read_text())
        out = tmp_path / f"{name}.json"
        assert cli.main(["evaluate", str(run_dir(tmp_path, name)), "--out", str(out)]) == 0
        assert json.loads(out.read_text())["rsum"] == pytest.approx(trained["rsum"], abs=1e-6)
    argv = ["evaluate", str(run_dir(tmp_path, "fused")), "--rerank-with", str(run_dir(tmp_path, "dual"))]
    assert cli.main([*argv, "--rerank-k", "3"]) == 0
    reranked = json.loads((run_dir(tmp_path, "fused") / "metrics-rerank-dual-k3.json").read_text())
    dual_metrics = json.loads((run_dir(tmp_path, "dual") / "metrics.json").read_text())
    assert reranked["rerank_k"] == 3 and reranked["rerank_with"]["run"].endswith("dual")
    for direction in ("i2t", "t2i"):  # beyond the top 3 the dual run's ranking stands
        assert reranked[direction]["R@5"] == dual_metrics[direction]["R@5"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir(tmp_path, "dual")), "--rerank-k", "3"]) == 2
    assert "has no fusion layers" in capsys.readouterr().err
    assert (
        cli.main(["evaluate", str(run_dir(tmp_path, "fused")), "--rerank-with", str(run_dir(tmp_path, "fused"))]) == 2
    )
    assert "a run that scores pairs; give a dual-encoder run" in capsys.readouterr().err


def test_torchrun_two_ranks_train_like_one_process(demo_cache, tmp_path, monkeypatch):
    """2 CPU ranks (gloo), each decoding and tokenising half of the global batch, with features gathered for
    the loss and gradients summed, see the single process's losses (this one's, one thread like each rank)
    and end with its weights (to Adam's noise floor: its first update is lr·g/|g|, so near-zero gradients
    turn summation-order noise into ~lr/100)."""
    repo = Path(__file__).resolve().parents[4]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    configs = {
        name: write_config(
            tmp_path / f"{name}.yaml", demo_cache, two_tower(SCRATCH), name=name, batch_size=56, num_epochs=2
        )
        for name in ("single", "ranks")
    }
    monkeypatch.chdir(tmp_path)
    assert backbone_train.main([str(configs["single"])]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    done = subprocess.run(
        [*torchrun, "-m", "pipeline.cli", "backbone-train", str(configs["ranks"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    weights = {name: torch.load(run_dir(tmp_path, name) / "last.pt", weights_only=True) for name in configs}
    losses = [[r["train_loss"] for r in weights[name]["history"]] for name in ("single", "ranks")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for part in ("encoder", "text_encoder"):
        for key, value in weights["single"][part].items():
            torch.testing.assert_close(weights["ranks"][part][key], value, rtol=1e-3, atol=1e-4, msg=(part, key))


def test_the_step_benchmark_feeds_two_towers_tokenised_in_the_workers(demo_cache, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", demo_cache, two_tower(SCRATCH), data={"num_workers": 2})
    assert backbone_train.main([str(config), "--bench", "--bench-steps", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["text"] == "clip" and result["num_workers"] == 2 and result["batch_size"] == 8
    assert result["step_images_per_s"] > 0 and result["loader_images_per_s"] > 0 and result["pipeline_vs_step"] > 0


@pytest.mark.parametrize("tower", ["scratch", "distilbert"])
def test_activation_checkpointing_trains_the_same_weights(demo_cache, tmp_path, monkeypatch, one_epoch_run, tower):
    """`model.text.checkpointing` recomputes the text layers in the backward pass: same gradients, less memory."""
    plain_run, text = one_epoch_run(tower)  # checkpointing off, the default
    monkeypatch.chdir(tmp_path)
    model = two_tower({**text, "checkpointing": True})
    assert backbone_train.main([str(write_config(tmp_path / "r.yaml", demo_cache, model, name="recomputed"))]) == 0
    plain, recomputed = (
        torch.load(run / "last.pt", weights_only=True) for run in (plain_run, run_dir(tmp_path, "recomputed"))
    )
    for key, value in plain["text_encoder"].items():
        torch.testing.assert_close(recomputed["text_encoder"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_hf_poolers_are_dropped_so_every_parameter_trains():
    """BERT-style `pooler` weights are never read (CLS or mean pooling of the states): DDP would stall on them."""
    from transformers import BertConfig, BertModel

    from encoding.backbones.text_encoder import HfTextTower

    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2))
    tower = HfTextTower(model, "cls")
    ids = torch.randint(1, 50, (2, 5))
    tower(ids, torch.ones_like(ids, dtype=torch.bool))[0].sum().backward()
    assert all(p.grad is not None for p in tower.parameters())


def test_last_n_locks_the_stages_of_convnext_style_trunks():
    from encoding.backbones.image_encoder import TimmTrunk
    from pipeline.training.freezing import lock, trunk_blocks

    trunk = TimmTrunk("convnext_atto", 32)
    blocks, inputs = trunk_blocks(trunk)
    assert len(blocks) == 4 and blocks[0] is trunk.model.stages[0]
    lock(trunk, blocks, inputs, 1, "model.trainable")
    trainable = {n for n, p in trunk.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.stages.3.", "model.norm_pre", "model.head")) for n in trainable)


def test_resume_refuses_a_text_tower_whose_tokenizer_changed(demo_cache, distilbert, tmp_path, monkeypatch, capsys):
    import shutil

    folder = tmp_path / "tower"
    shutil.copytree(distilbert, folder)
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", demo_cache, two_tower(hf_text(folder, pretrained=False)))
    assert backbone_train.main([str(config)]) == 0
    from transformers import AutoTokenizer, BertTokenizerFast

    vocab = sorted(AutoTokenizer.from_pretrained(folder).get_vocab().items(), key=lambda item: item[1])
    shuffled = [token for token, _ in vocab[:5]] + [token for token, _ in reversed(vocab[5:])]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(shuffled)}).save_pretrained(folder)
    capsys.readouterr()
    assert cli.main(["backbone-train", str(config), "--resume", "--set", "training.num_epochs=2"]) == 2
    assert "the text tower's model or tokenizer" in capsys.readouterr().err


def test_more_review_refusals(demo_cache, tmp_path, monkeypatch, capsys):
    """A tokenizer without padding, a loss given as a bare string, an open_clip tower with a hub tokenizer."""
    from transformers import BertTokenizerFast

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "nopad"
    vocab = {token: i for i, token in enumerate(["[UNK]", "[CLS]", "[SEP]", "a", "b"])}
    folder.mkdir()
    BertTokenizerFast(vocab=vocab, pad_token=None).save_pretrained(folder)
    cases = [
        (
            two_tower(hf_text(folder, arch="distilbert", pretrained=False, tokenizer=str(folder))),
            None,
            "no padding token",
        ),
        (two_tower(SCRATCH, fusion=FUSION), "itm", "config key 'loss': expected a mapping"),
        (two_tower({"library": "open_clip", "arch": "ViT-B-16-SigLIP"}), None, "takes its tokenizer from the hub"),
    ]
    for model, loss, message in cases:
        config = write_config(tmp_path / "c.yaml", demo_cache, model)
        if loss is not None:
            values = yaml.safe_load(config.read_text())
            values["loss"] = loss
            config.write_text(yaml.safe_dump(values))
        assert cli.main(["backbone-train", str(config)]) == 2, message
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [("training.compile=true", "'training.compile': backbone mode runs"), ("data.stream=true", "'data.stream'")],
)
def test_head_only_training_options_are_refused_in_backbone_mode(demo_cache, tmp_path, capsys, override, message):
    config = write_config(tmp_path / "c.yaml", demo_cache, two_tower(SCRATCH))
    assert cli.main(["backbone-train", str(config), "--set", override]) == 2
    assert message in capsys.readouterr().err
