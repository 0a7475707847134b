"""Tiny backbone-training configs written to temporary YAML files."""

from pathlib import Path

import pytest
import torch
import yaml

TINY_VIT = {
    "library": "timm",
    "arch": "vit_tiny_patch16_224",
    "image_size": 32,
    "patch_size": 8,
    "options": {"depth": 1, "embed_dim": 32, "num_heads": 2},
    "hidden_dim": 32,
}
TINY_RESNET = {
    "library": "timm",
    "arch": "resnet18",
    "image_size": 64,
    "options": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16},
    "pooling": "attention",
    "use_bn": True,
    "hidden_dim": 32,
}


def write_config(path: Path, cache: Path, model: dict, name: str = "tiny", data=None, loss=None, **training) -> Path:
    """A one-epoch config on `cache` with the given `model` section; `data`, `loss` and `training` keys override."""
    config = {
        "name": name,
        "data": {"cache": str(cache), "num_workers": 0, **(data or {})},
        "model": model,
        "augment": {"flip": 0.5, "color_jitter": 0.2, "rotation": 10.0, "crop_scale": 0.8},
        "loss": loss or {"type": "clip", "temperature": 0.07},
        "training": {
            "batch_size": 8,
            "learning_rate": 1e-3,
            "num_epochs": 1,
            "warmup_steps": 2,
            "eval_batch_size": 16,
            "device": "cpu",
            **training,
        },
    }
    Path(path).write_text(yaml.safe_dump(config))
    return Path(path)


def straight_and_resumed(tmp_path: Path, cache: Path, model: dict, monkeypatch, trainer, loss=None) -> tuple:
    """`last.pt` of a two-epoch run, and of the same run killed after its first epoch and resumed (both parts
    of the second with 2 loader workers); `trainer` is the class whose `end_epoch` the kill patches."""
    from pipeline.commands import backbone_train

    straight = write_config(tmp_path / "a.yaml", cache, model, name="straight", loss=loss, num_epochs=2)
    split_run = write_config(tmp_path / "b.yaml", cache, model, name="split", loss=loss, num_epochs=2)
    monkeypatch.chdir(tmp_path)
    assert backbone_train.main([str(straight)]) == 0
    end_epoch = trainer.end_epoch

    def killed_after_first_epoch(self, record, writer=None):
        end_epoch(self, record, writer)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "end_epoch", killed_after_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            backbone_train.main([str(split_run), "--set", "data.num_workers=2"])
    assert backbone_train.main([str(split_run), "--resume", "--set", "data.num_workers=2"]) == 0
    return tuple(torch.load(tmp_path / "results" / n / "last.pt", weights_only=True) for n in ("straight", "split"))
