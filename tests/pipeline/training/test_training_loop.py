"""The one training loop: in-place clamp of the logit scale, ALBEF's alpha warm-up, patience counted after
min_epochs, a line per epoch, TensorBoard, and the same run_info keys in every mode."""

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from pipeline import cli, losses
from pipeline.config.experiment import from_dict
from pipeline.data.split_tensors import load_splits
from pipeline.training.pooled_heads import HeadTrainer

RUN_INFO_KEYS = {
    "trainable_parameters",
    "train_seconds",
    "inference_ms_per_1000_queries",
    "inference_gallery_images",
    "train_images",
    "train_captions",
    "train_streamed",
    "epochs",
    "best_epoch",
    "peak_memory_mb",
    "device",
    "precision",
    "figures",
}
ROOT = Path(__file__).resolve().parents[3]


def _trainer(cache, **training):
    config = from_dict(
        {
            "data": {"cache": str(cache)},
            "model": {"type": "mlp", "output_dim": 8, "hidden_dim": 16},
            "training": {"batch_size": 8, "device": "cpu", "warmup_steps": 0, **training},
        }
    )
    splits = load_splits(cache, ["train", "val"])
    trainer = HeadTrainer(config, splits["train"], splits["val"])
    trainer.log_epochs = False
    return trainer


def test_a_scale_pushed_past_the_bound_is_clamped_in_place_and_recovers():
    loss = losses.build("clip", temperature=0.07)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))
    loss.clamp_()
    assert loss.logit_scale.item() == pytest.approx(math.log(100.0))
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.5)
    image, text = torch.eye(4), torch.eye(4)[[1, 0, 3, 2]]  # every positive pair is wrong: a lower scale helps
    for _ in range(5):
        optimizer.zero_grad()
        loss(image, text).backward()
        assert loss.logit_scale.grad.abs().item() > 0  # the clamp never cuts the gradient
        optimizer.step()
        loss.clamp_()
    assert loss.logit_scale.item() < math.log(100.0) - 0.1


def _train_cli(tmp_path, cache, name: str, sections: str) -> int:
    """`xalign train` on a tiny mlp config named `name`, with extra YAML `sections`."""
    config = tmp_path / "c.yaml"
    config.write_text(f"name: {name}\ndata: {{cache: {cache}}}\nmodel: {{output_dim: 8, hidden_dim: 16}}\n{sections}")
    return cli.main(["train", str(config)])


def test_a_run_started_at_temperature_0001_ends_with_scale_at_most_100(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sections = "loss: {temperature: 0.001}\ntraining: {num_epochs: 3, batch_size: 8, device: cpu, learning_rate: 0.5}\n"
    assert _train_cli(tmp_path, synthetic_cache, "hot", sections) == 0
    state = torch.load(tmp_path / "results" / "hot" / "last.pt", weights_only=True)
    assert state["loss"]["logit_scale"].item() <= math.log(100.0) + 1e-6


def test_blip_alpha_ramps_over_the_first_epoch():
    blip = losses.build("blip", alpha=0.4, queue_size=8)
    assert blip.current_alpha(0.0) == 0.0 and blip.current_alpha(0.5) == pytest.approx(0.2)
    assert blip.current_alpha(1.0) == pytest.approx(0.4) and blip.current_alpha(3.0) == pytest.approx(0.4)
    assert blip.current_alpha(None) == pytest.approx(0.4)
    assert losses.build("blip", alpha_warmup=False, queue_size=8).current_alpha(0.0) == pytest.approx(0.4)
    image, text = torch.eye(4)[:, :3].roll(1, 0) + 0.1, torch.eye(4)[:, :3] + 0.1
    start = losses.build("blip", alpha=0.4, queue_size=8)(image, text, progress=0.0)
    no_distillation = losses.build("blip", alpha=0.0, queue_size=8)(image, text)
    assert start.item() == pytest.approx(no_distillation.item())


def test_the_trainer_passes_progress_to_blip(synthetic_cache):
    base = _trainer(synthetic_cache, num_epochs=1).config.to_dict()
    config = from_dict({**base, "model": {"type": "blip"}, "loss": {"type": "blip", "queue_size": 8}})
    splits = load_splits(synthetic_cache, ["train", "val"])
    blip = HeadTrainer(config, splits["train"], splits["val"])
    seen, original = [], blip.loss.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("progress"))
        return original(*args, **kwargs)

    blip.loss.forward = spy
    blip.train_epoch(0)
    assert seen[0] == 0.0 and seen == sorted(seen) and seen[-1] < 1.0
    assert seen == [step / blip.steps_per_epoch for step in range(blip.steps_per_epoch)]


def test_patience_counts_only_after_min_epochs(synthetic_cache, monkeypatch):
    constant = {"rsum": 50.0, **{d: {"R@1": 1.0, "R@5": 2.0, "R@10": 3.0} for d in ("i2t", "t2i")}}
    monkeypatch.setattr(HeadTrainer, "evaluate", lambda self, split: constant)
    assert _trainer(synthetic_cache, num_epochs=20, patience=2).run().epochs_run == 3
    assert _trainer(synthetic_cache, num_epochs=20, patience=2, min_epochs=6).run().epochs_run == 8


def test_train_prints_a_line_per_epoch_and_logs_tensorboard(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sections = "training: {num_epochs: 2, batch_size: 8, device: cpu, tensorboard: true}\n"
    assert _train_cli(tmp_path, synthetic_cache, "r", sections) == 0
    err = capsys.readouterr().err
    assert "epoch 1/2  loss " in err and "epoch 2/2  loss " in err and "val rsum " in err and "R@1 i2t/t2i " in err
    run = tmp_path / "results" / "r"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert set(json.loads((run / "run_info.json").read_text())) == RUN_INFO_KEYS


def test_evaluation_embeddings_are_fp32(synthetic_cache):
    trainer = _trainer(synthetic_cache, num_epochs=1)
    image, text = trainer.embed(trainer.val)
    assert image.dtype == torch.float32 and text.dtype == torch.float32
    assert not trainer.model.training


def test_no_module_imports_a_command_module():
    offenders = []
    for package in ("pipeline", "encoding"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "cli.py" or "commands" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
                if any(".commands" in n or n == "commands" for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
