"""Token heads end to end on a tiny token cache: train, resume, stream, evaluate, re-rank, refuse."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_synthetic_cache

from encoding.commands import split
from encoding.errors import BadInput
from pipeline.cli import main as cli
from pipeline.config.experiment import from_dict
from pipeline.data.split_tensors import load_splits
from pipeline.training.choice import trainer_for

HEAD_OPTIONS = {
    "attention_pool": {"hidden_dim": 16, "num_heads": 2},
    "token_transformer": {"hidden_dim": 16, "num_heads": 2, "num_layers": 1},
    "sparse_attention": {"hidden_dim": 16, "num_heads": 2, "num_layers": 1, "window": 2},
    "cross_encoder": {"hidden_dim": 16, "num_heads": 2, "num_layers": 1, "rerank_k": 4},
}


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory) -> Path:
    path = write_synthetic_cache(
        tmp_path_factory.mktemp("tokens") / "cache", num_images=48, tokens=(5, 7), shard_size=20
    )
    assert split.main([str(path), "--val", "8", "--test", "10", "--seed", "0"]) == 0
    return path


def write_config(directory: Path, cache_dir: Path, name: str, head: str, **sections) -> Path:
    config = {
        "name": name,
        "data": {"cache": str(cache_dir), **sections.pop("data", {})},
        "model": {"type": head, "output_dim": 8, **HEAD_OPTIONS.get(head, {}), **sections.pop("model", {})},
        "training": {
            "batch_size": 8,
            "num_epochs": 2,
            "warmup_steps": 0,
            "eval_batch_size": 16,
            "device": "cpu",
            **sections.pop("training", {}),
        },
        **sections,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def weights(run: Path) -> dict:
    return torch.load(run / "best.pt", weights_only=True)["model"]


@pytest.mark.parametrize("head", list(HEAD_OPTIONS))
def test_each_token_head_trains_and_evaluates(token_cache, tmp_path, monkeypatch, head):
    monkeypatch.chdir(tmp_path)
    assert cli(["train", str(write_config(tmp_path, token_cache, head, head))]) == 0
    run = tmp_path / "results" / head
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 10 and 0 <= metrics["rsum"] <= 600
    info = json.loads((run / "run_info.json").read_text())
    assert info["inference_ms_per_1000_queries"] > 0
    assert cli(["evaluate", str(run), "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["rsum"] == pytest.approx(metrics["rsum"])
    if head == "cross_encoder":
        assert metrics["rerank_k"] == 4
        assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["type"] == "itm"


@pytest.mark.parametrize("head", ["token_transformer", "cross_encoder"])
def test_streamed_and_in_memory_training_give_the_same_weights(token_cache, tmp_path, monkeypatch, head):
    monkeypatch.chdir(tmp_path)
    for name, stream in (("memory", False), ("streamed", True)):
        config = write_config(tmp_path, token_cache, name, head, data={"stream": stream})
        assert cli(["train", str(config)]) == 0
    memory, streamed = weights(tmp_path / "results" / "memory"), weights(tmp_path / "results" / "streamed")
    assert memory.keys() == streamed.keys()
    assert all(torch.equal(memory[k], streamed[k]) for k in memory)


class Killed(Exception):
    pass


def token_trainer(cache_dir: Path, head: str, out_dir: Path):
    values = {
        "data": {"cache": str(cache_dir), "stream": True},
        "model": {"type": head, "output_dim": 8, **HEAD_OPTIONS[head]},
        "training": {"batch_size": 8, "num_epochs": 3, "patience": 100, "warmup_steps": 0, "device": "cpu"},
    }
    config = from_dict(values)
    splits = load_splits(cache_dir, ["train", "val"])
    return trainer_for(config)(config, splits["train"], splits["val"], out_dir)


@pytest.mark.parametrize("head", ["attention_pool", "cross_encoder"])
def test_resume_equals_an_uninterrupted_run(token_cache, tmp_path, head):
    whole = token_trainer(token_cache, head, tmp_path / "whole")
    whole.run()
    interrupted = token_trainer(token_cache, head, tmp_path / "parts")

    def kill_after_first(epoch, record):
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        interrupted.run(on_epoch_end=kill_after_first)
    resumed = token_trainer(token_cache, head, tmp_path / "parts")
    resumed.resume()
    resumed.run()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_cross_encoder_reranks_a_dual_run(token_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(["train", str(write_config(tmp_path, token_cache, "dual", "token_transformer"))]) == 0
    assert cli(["train", str(write_config(tmp_path, token_cache, "cross", "cross_encoder"))]) == 0
    assert cli(["train", str(write_config(tmp_path, token_cache, "pooled", "mlp", model={"hidden_dim": 16}))]) == 0
    results = tmp_path / "results"
    for dual in ("dual", "pooled"):
        args = ["evaluate", str(results / "cross"), "--rerank-with", str(results / dual), "--rerank-k", "3"]
        assert cli(args) == 0
        metrics = json.loads((results / "cross" / f"metrics-rerank-{dual}-k3.json").read_text())
        assert metrics["rerank_k"] == 3 and metrics["rerank_with"]["run"] == str((results / dual).resolve())
        assert metrics["provenance"]["cache_fingerprint"] == metrics["rerank_with"]["provenance"]["cache_fingerprint"]


def test_rerank_refusals(token_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    other = write_synthetic_cache(tmp_path / "other", num_images=48, tokens=(5, 7), shard_size=20, seed=1)
    assert split.main([str(other), "--val", "8", "--test", "10", "--seed", "0"]) == 0
    assert cli(["train", str(write_config(tmp_path, token_cache, "cross", "cross_encoder"))]) == 0
    assert cli(["train", str(write_config(tmp_path, other, "elsewhere", "attention_pool"))]) == 0
    assert cli(["train", str(write_config(tmp_path, token_cache, "dual", "attention_pool"))]) == 0
    results = tmp_path / "results"
    cases = [
        (["evaluate", str(results / "cross"), "--rerank-with", str(results / "elsewhere")], "another cache or split"),
        (["evaluate", str(results / "cross"), "--rerank-with", str(results / "cross")], "a run that scores pairs"),
        (["evaluate", str(results / "dual"), "--rerank-with", str(results / "dual")], "takes a cross_encoder run"),
        (["evaluate", str(results / "cross"), "--rerank-k", "0"], "--rerank-k 0"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert cli(argv) == 2, argv
        assert message in capsys.readouterr().err


def test_a_token_head_on_a_cache_without_tokens_says_to_encode_with_tokens(
    synthetic_cache, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert cli(["train", str(write_config(tmp_path, synthetic_cache, "t", "attention_pool"))]) == 2
    assert "--tokens" in capsys.readouterr().err
    assert not (tmp_path / "results" / "t" / "last.pt").exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"type": "cross_encoder"}, "loss": {"type": "clip"}}, "trains with loss 'itm'"),
        ({"model": {"type": "mlp"}, "loss": {"type": "itm"}}, "loss 'itm' trains cross_encoder"),
    ],
)
def test_config_pairs_heads_with_their_loss(values, message):
    with pytest.raises(BadInput, match=message):
        from_dict(values)
    assert from_dict({"model": {"type": "cross_encoder"}}).loss.type == "itm"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[3] / "configs" / "attention").glob("*.yaml")))
def test_every_attention_study_config_is_valid(path):
    from pipeline.config.experiment import load_config

    config = load_config(path)
    assert config.data.cache == "pretrain_encoded/demo-1500-tokens"
