"""Pooled heads streamed from the shards: the same weights as in memory, the stream/memory decision, exact resume
after SIGKILL, refusals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from encoding.cache import open_cache
from encoding.shard_rows import ShardRows
from pipeline.cli import main as cli
from pipeline.config.experiment import from_dict
from pipeline.data import epoch_stream, memory_budget
from pipeline.data.memory_budget import MemoryBudget, cgroup_dirs, cgroup_room_bytes, choose_stream
from pipeline.data.split_tensors import load_splits, read_inputs
from pipeline.training.pooled_heads import HeadTrainer

REPO = Path(__file__).resolve().parents[3]


def write_config(directory: Path, cache: Path, name: str, **sections) -> Path:
    config = {
        "name": name,
        "data": {"cache": str(cache), **sections.pop("data", {})},
        "model": sections.pop("model", {"type": "mlp", "output_dim": 8, "hidden_dim": 16}),
        "training": {
            "batch_size": 8,
            "num_epochs": 2,
            "patience": 1000,
            "device": "cpu",
            **sections.pop("training", {}),
        },
        **sections,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def best_weights(run: Path) -> dict:
    return torch.load(run / "best.pt", weights_only=True)["model"]


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {"training": {"epoch_sampling": "image"}, "loss": {"mixup_alpha": 1.0}},
        {"model": {"type": "linear", "output_dim": 8}, "loss": {"type": "siglip"}},
    ],
    ids=["caption-clip", "image-mixup", "linear-siglip"],
)
def test_streamed_and_in_memory_pooled_training_give_the_same_weights(synthetic_cache, tmp_path, monkeypatch, sections):
    monkeypatch.chdir(tmp_path)
    for name, stream in (("memory", False), ("streamed", True)):
        config = write_config(
            tmp_path, synthetic_cache, name, **json.loads(json.dumps(sections)), data={"stream": stream}
        )
        assert cli(["train", str(config)]) == 0
        info = json.loads((tmp_path / "results" / name / "run_info.json").read_text())
        assert info["train_streamed"] is stream
    memory, streamed = best_weights(tmp_path / "results" / "memory"), best_weights(tmp_path / "results" / "streamed")
    assert memory.keys() == streamed.keys()
    assert all(torch.equal(memory[k], streamed[k]) for k in memory)
    metrics = [json.loads((tmp_path / "results" / n / "metrics.json").read_text()) for n in ("memory", "streamed")]
    assert metrics[0]["rsum"] == metrics[1]["rsum"]


def test_streamed_float16_rows_train_like_the_same_rows_in_memory(tmp_path, monkeypatch):
    """A float16 cache: windows are read as float16 and cut into float32 micro-batches, the same values as the
    float32 copy held in memory; small windows (64 items) so batches of 12 straddle them."""
    from conftest import write_synthetic_cache

    from encoding.commands import split

    cache = write_synthetic_cache(tmp_path / "half", num_images=90, dtype="float16")
    assert split.main([str(cache), "--val", "10", "--test", "10", "--seed", "0"]) == 0
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(epoch_stream, "POOLED_WINDOW_ITEMS", 24)
    for name, stream in (("memory", False), ("streamed", True)):
        config = write_config(tmp_path, cache, name, data={"stream": stream}, training={"batch_size": 12})
        assert cli(["train", str(config)]) == 0
    memory, streamed = best_weights(tmp_path / "results" / "memory"), best_weights(tmp_path / "results" / "streamed")
    assert all(torch.equal(memory[k], streamed[k]) for k in memory)


def test_a_lazy_split_reads_the_same_inputs_as_an_eager_one(synthetic_cache):
    eager = load_splits(synthetic_cache, ["train", "test"])
    lazy = load_splits(synthetic_cache, ["train", "test"], lazy=("train",))
    assert not lazy["train"].loaded and lazy["test"].loaded
    assert lazy["train"].dims == eager["train"].dims
    read = read_inputs(lazy["train"])
    assert torch.equal(read.image, eager["train"].image) and torch.equal(read.text, eager["train"].text)
    assert list(read.captions) == list(eager["train"].captions)


def test_shard_rows_reads_any_rows_in_the_order_asked(synthetic_cache):
    opened = open_cache(synthetic_cache)
    every = opened.arrays()
    reader = ShardRows(opened)
    rows = np.array([59, 0, 3, 25, 24, 26, 3, 50, 1])  # across the three shards, a repeat, runs and gaps
    assert np.array_equal(reader.rows("images/embeddings", rows, np.float32), every.image_embeddings[rows])
    assert list(reader.rows("images/ids", rows)) == list(every.image_ids[rows])
    captions = np.arange(len(every.caption_text))[::-7]
    assert list(reader.rows("captions/text", captions)) == list(every.caption_text[captions])
    reader.close()


def test_the_budget_counts_local_processes_and_the_cgroup_limit(tmp_path, monkeypatch):
    own = tmp_path / "memory" / "jobs" / "42"
    own.mkdir(parents=True)
    (own / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1: no limit here
    (own / "memory.usage_in_bytes").write_text("100\n")
    dirs = cgroup_dirs("5:devices:/\n4:memory:/jobs/42\n0::/\n", root=tmp_path)
    assert dirs[:3] == [(own, "v1"), (own.parent, "v1"), (tmp_path / "memory", "v1")] and dirs[3] == (tmp_path, "v2")
    assert cgroup_room_bytes(dirs) is None
    (own.parent / "memory.limit_in_bytes").write_text(str(8 << 30))  # a parent's limit binds its children
    (own.parent / "memory.usage_in_bytes").write_text(str(2 << 30))
    assert cgroup_room_bytes(dirs) == 6 << 30
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("5\n")
    assert cgroup_room_bytes([(tmp_path, "v2")]) is None
    budget = memory_budget.memory_budget(available=20 << 30, cgroup_room=6 << 30, processes=2)
    assert budget.bytes == 0.5 * (6 << 30) / 2 and "cgroup room 6.0 GiB" in budget.reason and "2 local" in budget.reason
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert memory_budget.memory_budget(available=8 << 30, cgroup_room=None).bytes == 1 << 30
    small = MemoryBudget(1 << 30, "test")
    assert choose_stream("x", 2 << 30, None, small) and not choose_stream("x", 1 << 29, None, small)
    assert choose_stream("x", 1, True, small) and not choose_stream("x", 4 << 30, False, small)


def test_the_train_split_streams_when_it_exceeds_the_budget(synthetic_cache, monkeypatch, caplog):
    monkeypatch.setattr(memory_budget, "available_memory_bytes", lambda: 1000)  # a machine of 1,000 bytes
    config = from_dict(
        {
            "data": {"cache": str(synthetic_cache)},
            "model": {"output_dim": 8},
            "training": {"device": "cpu", "batch_size": 8},
        }
    )
    splits = load_splits(synthetic_cache, ["train", "val"], lazy=("train",))
    trainer = HeadTrainer(config, splits["train"], splits["val"])
    assert trainer.streams_train and not trainer.train.loaded
    assert "streamed from the shards" in caplog.text and "MemAvailable" in caplog.text


def test_a_streamed_batch_larger_than_the_split_is_refused(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, synthetic_cache, "big", data={"stream": True}, training={"batch_size": 4096})
    assert cli(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "training.batch_size" in err and "4096" in err and "streamed" in err
    assert not (tmp_path / "results" / "big" / "last.pt").exists()


def test_a_non_finite_streamed_row_is_refused_naming_the_shard(tmp_path, monkeypatch, capsys):
    from conftest import write_synthetic_cache

    from encoding.commands import split

    cache = write_synthetic_cache(tmp_path / "cache")
    assert split.main([str(cache), "--val", "10", "--test", "10", "--seed", "0"]) == 0
    trainer_split = load_splits(cache, ["train", "val"], lazy=("train",))
    config = from_dict(
        {
            "data": {"cache": str(cache), "stream": True},
            "model": {"output_dim": 8},
            "training": {"device": "cpu", "batch_size": 8},
        }
    )
    trainer = HeadTrainer(config, trainer_split["train"], trainer_split["val"])
    reader_checks = trainer.source.checks["images/embeddings"]
    with pytest.raises(Exception, match=r"shard-00000\.h5.*NaN or inf"):
        reader_checks(cache / "shard-00000.h5", np.full((2, 12), np.nan, dtype=np.float32))


@pytest.mark.slow
def test_a_streamed_run_killed_with_sigkill_resumes_to_the_same_weights(synthetic_cache, tmp_path):
    """`xalign train` in a subprocess, SIGKILLed once its first epoch is saved, then `--resume`: the same weights
    and history as a run never interrupted."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    xalign = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]
    training = {"num_epochs": 30, "batch_size": 8}
    for name in ("whole", "killed"):
        write_config(tmp_path, synthetic_cache, name, data={"stream": True}, training=training)
    assert subprocess.run([*xalign, "train", "whole.yaml"], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    run = subprocess.Popen([*xalign, "train", "killed.yaml"], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    history = tmp_path / "results" / "killed" / "history.jsonl"
    deadline = time.monotonic() + 120
    while not (history.exists() and history.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL
    assert not (tmp_path / "results" / "killed" / "metrics.json").exists()  # killed before the end
    resumed = subprocess.run([*xalign, "train", "killed.yaml", "--resume"], cwd=tmp_path, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole, killed = (torch.load(tmp_path / "results" / n / "last.pt", weights_only=True) for n in ("whole", "killed"))
    assert all(torch.equal(whole["model"][k], killed["model"][k]) for k in whole["model"])
    lines = [(tmp_path / "results" / n / "history.jsonl").read_text().splitlines() for n in ("whole", "killed")]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in ls] for ls in lines]
    assert strip[0] == strip[1]


def test_shard_rows_keeps_at_most_its_limit_of_shards_open(synthetic_cache):
    opened = open_cache(synthetic_cache)
    every = opened.arrays()
    reader = ShardRows(opened)
    reader.max_open = 2
    rows = np.array([0, 30, 55, 1, 59])  # shards 0, 1, 2, 0, 2
    for _ in range(2):
        assert np.array_equal(reader.rows("images/embeddings", rows, np.float32), every.image_embeddings[rows])
        assert len(reader.handles) <= 2
    reader.close()


@pytest.mark.parametrize("key", ["images/embeddings", "captions/embeddings"])
def test_a_shard_of_other_dims_is_refused_naming_it(tmp_path, monkeypatch, capsys, key):
    import h5py
    from conftest import write_synthetic_cache

    from encoding.commands import split

    cache = write_synthetic_cache(tmp_path / "cache")
    assert split.main([str(cache), "--val", "10", "--test", "10", "--seed", "0"]) == 0
    with h5py.File(cache / "shard-00001.h5", "a") as f:  # one shard re-written with one dim fewer
        rows = f[key][:, :-1]
        del f[key]
        f[key] = rows
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, cache, "dims", data={"stream": True})
    assert cli(["train", str(config), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert "shard-00001.h5" in err and key in err and "dim" in err
    assert not (tmp_path / "results" / "dims" / "last.pt").exists()
