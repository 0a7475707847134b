"""`xalign evaluate` on a trained run and on a cache, retrieval and zero-shot, against direct computations."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_synthetic_cache

from encoding import cache
from encoding.commands import split
from pipeline import cli, open_run
from pipeline.data.split_tensors import load_splits
from pipeline.evaluation.metrics import retrieval_metrics

CLASSES = ["zero", "one", "two", "three", "four"]
TEMPLATES = ["a {}", "the {}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(working dir, run dir): a 3-epoch run on a synthetic cache named by a relative path."""
    work = tmp_path_factory.mktemp("work")
    write_synthetic_cache(work / "cache")
    assert split.main([str(work / "cache"), "--val", "10", "--test", "10", "--seed", "0"]) == 0
    (work / "run.yaml").write_text(
        "name: tiny\ndata:\n  cache: cache\nmodel:\n  output_dim: 8\n  hidden_dim: 16\n"
        "training:\n  num_epochs: 3\n  batch_size: 8\n  device: cpu\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert cli.main(["train", "run.yaml"]) == 0
    return work, work / "results" / "tiny"


def write_prompt_cache(path, spec: str, prompts: list[str], embeddings: np.ndarray):
    """A one-shard cache whose captions are `prompts` (one dummy image), through the real cache writer."""
    model = {"spec": spec, "dim": embeddings.shape[1], "dtype": "float32", "normalized": False, "weights": "none"}
    cache.init_metadata(
        path,
        {"dataset": {"kind": "prompts", "root": str(path)}, "image_model": model, "text_model": model, "num_shards": 1},
    )
    data = cache.ShardData(
        ["prompts"], np.zeros((1, embeddings.shape[1])), ["none"], ["prompts"] * len(prompts), embeddings, prompts
    )
    cache.record_shard(path, cache.write_shard(path, 0, data, dtype="float32"))
    return path


def naive_zeroshot(images: torch.Tensor, labels: torch.Tensor, prompt_emb: torch.Tensor) -> float:
    """Top-1 percent: class = argmax over classes of cos(image, mean of normalised prompts of that class)."""
    hits = 0
    per_class = prompt_emb.reshape(len(CLASSES), len(TEMPLATES), -1)
    centres = [F.normalize(F.normalize(p, dim=-1).mean(0), dim=0) for p in per_class]
    for image, label in zip(images, labels):
        scores = [float(F.normalize(image, dim=0) @ c) for c in centres]
        hits += int(np.argmax(scores) == int(label))
    return 100.0 * hits / len(labels)


def test_evaluate_run_from_another_directory_with_more_ks(trained, tmp_path, monkeypatch):
    work, run = trained
    monkeypatch.chdir(tmp_path)  # the run's data.cache is relative to `work`
    out = tmp_path / "m.json"
    assert cli.main(["evaluate", str(run), "--ks", "1,5,10,50", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    saved = json.loads((run / "metrics.json").read_text())
    assert got["split"] == "test" and got["i2t"]["R@50"] == 100.0
    for direction in ("i2t", "t2i"):
        for key in ("R@1", "R@5", "R@10", "median_rank", "mean_rank"):
            assert got[direction][key] == pytest.approx(saved[direction][key])
    assert got["rsum"] == pytest.approx(saved["rsum"])


def test_evaluate_other_split_keeps_the_runs_test_metrics(trained):
    work, run = trained
    before = (run / "metrics.json").read_text()
    assert cli.main(["evaluate", str(run), "--split", "val", "--checkpoint", "last.pt"]) == 0
    assert (run / "metrics.json").read_text() == before
    val = json.loads((run / "metrics-val.json").read_text())
    model = open_run(run, "last.pt").model
    data = load_splits(work / "cache", ["val"])["val"]
    with torch.no_grad():
        expected = retrieval_metrics(
            model.encode_image(data.image), model.encode_text(data.text), data.caption_image_index
        )
    assert val["split"] == "val" and val["rsum"] == pytest.approx(expected["rsum"])
    assert val["t2i"]["mean_rank"] == pytest.approx(expected["t2i"]["mean_rank"])


def test_evaluate_cache_is_cosine_on_raw_embeddings(tmp_path):
    path = write_synthetic_cache(tmp_path / "eq", image_dim=10, text_dim=10)
    assert split.main([str(path), "--val", "10", "--test", "15", "--seed", "1"]) == 0
    assert cli.main(["evaluate", "--cache", str(path), "--split", "test"]) == 0
    got = json.loads((path / "metrics-test.json").read_text())
    data = load_splits(path, ["test"])["test"]
    expected = retrieval_metrics(
        F.normalize(data.image, dim=-1), F.normalize(data.text, dim=-1), data.caption_image_index
    )
    assert got.pop("provenance")["cache_fingerprint"] == cache.read_metadata(path)["fingerprint"]
    assert got == {"split": "test", **expected}


def test_zeroshot_on_a_cache_with_prompts_from_a_second_cache(tmp_path):
    path = write_synthetic_cache(tmp_path / "eq", num_images=40, image_dim=10, text_dim=10)
    assert split.main([str(path), "--val", "5", "--test", "20", "--seed", "0"]) == 0
    data = load_splits(path, ["all", "test"])
    # prompts near each class's mean image embedding, one noisy copy per template
    rng = np.random.default_rng(0)
    centres = np.stack([data["all"].image[data["all"].labels == c].mean(0).numpy() for c in range(5)])
    prompt_emb = np.repeat(centres, len(TEMPLATES), axis=0) + 0.3 * rng.normal(size=(10, 10))
    prompts = [t.format(c) for c in CLASSES for t in TEMPLATES]
    write_prompt_cache(tmp_path / "prompts", "synthetic:text", prompts, prompt_emb.astype(np.float32))
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    (tmp_path / "templates.yaml").write_text(json.dumps(TEMPLATES))
    argv = [
        "evaluate",
        "--cache",
        str(path),
        "--zeroshot",
        "--classes",
        str(tmp_path / "classes.json"),
        "--templates",
        str(tmp_path / "templates.yaml"),
        "--prompt-cache",
        str(tmp_path / "prompts"),
    ]
    assert cli.main(argv) == 0
    z = json.loads((path / "metrics-test.json").read_text())["zeroshot"]
    test = data["test"]
    assert z["top1"] == pytest.approx(naive_zeroshot(test.image, test.labels, torch.tensor(prompt_emb).float()))
    assert z["top1"] > 40 and z["top5"] == 100 and z["num_classes"] == 5 and z["num_templates"] == 2


def test_zeroshot_through_the_runs_text_head(trained, tmp_path):
    work, run = trained
    rng = np.random.default_rng(1)
    prompts = [t.format(c) for c in CLASSES for t in TEMPLATES]
    prompt_emb = rng.normal(size=(10, 10)).astype(np.float32)  # text dim of the synthetic cache
    write_prompt_cache(tmp_path / "prompts", "synthetic:text", prompts, prompt_emb)
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    (tmp_path / "templates.yaml").write_text(json.dumps(TEMPLATES))
    out = tmp_path / "z.json"
    argv = [
        "evaluate",
        str(run),
        "--zeroshot",
        "--classes",
        str(tmp_path / "classes.json"),
        "--templates",
        str(tmp_path / "templates.yaml"),
        "--prompt-cache",
        str(tmp_path / "prompts"),
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    model = open_run(run).model
    test = load_splits(work / "cache", ["test"])["test"]
    with torch.no_grad():
        expected = naive_zeroshot(
            model.encode_image(test.image), test.labels, model.encode_text(torch.tensor(prompt_emb))
        )
    assert json.loads(out.read_text())["zeroshot"]["top1"] == pytest.approx(expected)


@pytest.mark.slow
def test_zeroshot_on_the_demo_with_the_real_minilm(demo_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "demo.yaml"
    config.write_text(
        f"name: zs\ndata:\n  cache: {demo_cache}\nmodel:\n  output_dim: 32\n  hidden_dim: 64\n"
        "training:\n  num_epochs: 2\n  batch_size: 16\n"
    )
    assert cli.main(["train", str(config)]) == 0
    assert cli.main(["evaluate", "results/zs", "--zeroshot"]) == 0  # classes.json of the demo, MiniLM prompts
    z = json.loads((tmp_path / "results" / "zs" / "metrics.json").read_text())["zeroshot"]
    assert z["num_classes"] == 10 and z["templates"] == "demo" and z["num_images"] == 12
    assert 0 <= z["top1"] <= z["top5"] <= 100


def test_errors_exit_2_with_messages(trained, tmp_path, capsys):
    work, run = trained
    unequal = work / "cache"
    cases = [
        (["evaluate"], "give RUN_DIR, --cache DIR, or both"),
        (["evaluate", str(run), "--ks", "0,5"], "expected comma-separated positive integers"),
        (["evaluate", str(run), "--split", "nope"], "no split 'nope'"),
        (["evaluate", "--cache", str(unequal)], "image dim 12 != text dim 10"),
        (["evaluate", str(tmp_path)], "no checkpoint"),
        (["evaluate", str(run), "--zeroshot"], "no class names"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    other = write_synthetic_cache(tmp_path / "wide", image_dim=7, text_dim=10)
    assert split.main([str(other), "--val", "5", "--test", "5"]) == 0
    assert cli.main(["evaluate", str(run), "--cache", str(other)]) == 2
    assert "dim 7), but the run" in capsys.readouterr().err  # another backbone: refused before any dims check
    nolabels = write_synthetic_cache(tmp_path / "nolabels", labels=False)
    assert split.main([str(nolabels), "--val", "5", "--test", "5"]) == 0
    assert cli.main(["evaluate", str(run), "--cache", str(nolabels), "--zeroshot"]) == 2
    assert "no images/labels" in capsys.readouterr().err
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    assert cli.main(["evaluate", str(run), "--zeroshot", "--classes", str(tmp_path / "classes.json")]) == 2
    assert "cannot load the cache's text model" in capsys.readouterr().err
    write_prompt_cache(tmp_path / "p", "synthetic:text", ["a zero"], np.zeros((1, 10), np.float32))
    argv = [
        "evaluate",
        str(run),
        "--zeroshot",
        "--classes",
        str(tmp_path / "classes.json"),
        "--prompt-cache",
        str(tmp_path / "p"),
    ]
    assert cli.main(argv) == 2 and "prompts are not among its captions" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "p")
    write_prompt_cache(tmp_path / "p", "st:other", ["a zero"], np.zeros((1, 10), np.float32))
    assert cli.main(argv) == 2 and "prompts must come from the same text backbone" in capsys.readouterr().err
