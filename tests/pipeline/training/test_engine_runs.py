"""Head training: every file in configs/heads/ trains with `xalign train`, seeded runs repeat, and --resume
continues exactly."""

import json
from pathlib import Path

import pytest
import torch

from pipeline import cli
from pipeline.config.experiment import load_config
from pipeline.data.split_tensors import load_splits
from pipeline.training.pooled_heads import HeadTrainer

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "heads"
HEAD_CONFIGS = sorted(path.stem for path in CONFIGS.glob("*.yaml"))  # the README's loop: every file trains
TINY = ["training.num_epochs=2", "training.batch_size=16", "training.device=cpu", "model.output_dim=16"]
QUEUE = {"blip": ["loss.queue_size=32"]}


@pytest.mark.parametrize("name", HEAD_CONFIGS)
def test_every_head_config_trains_with_its_loss(name, synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", str(CONFIGS / f"{name}.yaml"), "--set", f"data.cache={synthetic_cache}"]
    tiny = TINY + QUEUE.get(name, []) + ([] if name == "linear" else ["model.hidden_dim=32"])
    assert cli.main(argv + [item for s in tiny for item in ("--set", s)]) == 0
    config = load_config(CONFIGS / f"{name}.yaml")
    metrics = json.loads((tmp_path / "results" / config.name / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] == 10


def _trainer(cache, out_dir, epochs=4, **training):
    overrides = [f"data.cache={cache}", *TINY, "model.hidden_dim=32", f"training.num_epochs={epochs}"]
    overrides += ["training.patience=100"]
    overrides += [f"training.{k}={v}" for k, v in training.items()]
    config = load_config(CONFIGS / "mlp_baseline.yaml", overrides)
    splits = load_splits(cache, ["train", "val"])
    return HeadTrainer(config, splits["train"], splits["val"], out_dir)


def test_seeded_runs_are_reproducible(synthetic_cache, tmp_path):
    first = _trainer(synthetic_cache, None).run()
    second = _trainer(synthetic_cache, None).run()
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]
    assert [r["val_rsum"] for r in first.history] == [r["val_rsum"] for r in second.history]


def test_resume_equals_an_uninterrupted_run(synthetic_cache, tmp_path):
    whole = _trainer(synthetic_cache, tmp_path / "whole")
    whole.run()
    interrupted = _trainer(synthetic_cache, tmp_path / "parts", epochs=4)
    with pytest.raises(_Stop):  # as if killed right after epoch 1 was saved
        interrupted.run(on_epoch_end=lambda epoch, record: _stop_after(epoch, 1))
    resumed = _trainer(synthetic_cache, tmp_path / "parts")
    resumed.resume()
    assert resumed.epoch == 2
    resumed.run()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)


class _Stop(Exception):
    pass


def _stop_after(epoch: int, last: int) -> None:
    if epoch == last:
        raise _Stop
