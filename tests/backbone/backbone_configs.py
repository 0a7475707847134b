"""Tiny backbone-training configs written to temporary YAML files, and a one-thread fixture for tiny models."""

from pathlib import Path

import pytest
import torch
import yaml


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine thread barriers stall them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def write_config(path: Path, cache: Path, model: dict, name: str = "tiny", data=None, **training) -> Path:
    """A one-epoch config on `cache` with the given `model` section; `data` and `training` keys override."""
    config = {
        "name": name,
        "data": {"cache": str(cache), "num_workers": 0, **(data or {})},
        "model": model,
        "augment": {"flip": 0.5, "color_jitter": 0.2, "rotation": 10.0, "crop_scale": 0.8},
        "loss": {"type": "clip", "temperature": 0.07},
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
