"""Backbone-training config: YAML → frozen dataclasses, validated once at load (same rules as `xalign train`).

Unknown keys, wrong types and unknown library/pooling/loss names raise `BadInput` naming the key.
Sections: `name`, `data`, `model` (the encoder architecture), `augment`, `loss` (as in head training),
`training`. The caption side is frozen: its embeddings and dimension come from the cache.
"""

import dataclasses
from dataclasses import dataclass, field

from encoding.backbones.checkpoint import POOLINGS, TRUNKS
from encoding.errors import BadInput
from pipeline.config import LossConfig, build_dataclass
from pipeline.losses import LOSSES

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class BackboneDataConfig:
    cache: str = "pretrain_encoded/demo"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    num_workers: int = 2


@dataclass(frozen=True)
class BackboneModelConfig:
    library: str = "timm"  # timm or torchvision
    arch: str = "vit_tiny_patch16_224"
    image_size: int | list = 224  # side, or [height, width]
    patch_size: int | None = None  # timm ViTs: patch side (e.g. 8 on 32x64 pairs)
    options: dict = field(default_factory=dict)  # more constructor arguments (timm ViT: depth, embed_dim, ...)
    pretrained: bool = False  # the library's hub weights (needs a network)
    weights: str | None = None  # a local state-dict file for the trunk
    pooling: str = "avg"  # avg (the trunk's own: average / class token) or attention
    hidden_dim: int = 1024
    use_bn: bool = False
    dropout: float = 0.0
    mean: list = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip
    color_jitter: float = 0.2  # brightness, contrast and saturation strength; 0 = off
    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]; 0 = off
    crop_scale: float = 0.8  # random resized crop keeps [crop_scale, 1] of the area; 1 = off


@dataclass(frozen=True)
class BackboneTrainingConfig:
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    num_epochs: int = 20
    patience: int = 5
    warmup_steps: int = 100  # optimizer steps
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # AMP on CUDA: bf16 when supported (auto), fp16 with loss scaling, or fp32
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    accumulation_steps: int = 1  # micro-batches per optimizer step
    learnable_temp: bool = True
    eval_batch_size: int = 256
    tensorboard: bool = False  # also log to results/<name>/tensorboard when torch.utils.tensorboard imports


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "backbone"
    data: BackboneDataConfig = field(default_factory=BackboneDataConfig)
    model: BackboneModelConfig = field(default_factory=BackboneModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: BackboneTrainingConfig = field(default_factory=BackboneTrainingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def architecture(self, output_dim: int) -> dict:
        """What `encoding.backbones.checkpoint.build_image_encoder` needs to rebuild the encoder."""
        return {**dataclasses.asdict(self.model), "output_dim": output_dim}


def _check_ranges(config: BackboneConfig) -> None:
    m, a, t = config.model, config.augment, config.training
    size = m.image_size
    if not (isinstance(size, int) or len(size) == 2 and all(isinstance(s, int) for s in size)):
        raise BadInput(f"config key 'model.image_size': expected an int or [height, width], got {size!r}")
    for key, values in (("model.mean", m.mean), ("model.std", m.std)):
        if len(values) != 3 or not all(isinstance(v, int | float) for v in values):
            raise BadInput(f"config key '{key}': expected three numbers (R, G, B), got {values!r}")
    checks = {
        "augment.flip": 0 <= a.flip <= 1,
        "augment.color_jitter": a.color_jitter >= 0,
        "augment.rotation": a.rotation >= 0,
        "augment.crop_scale": 0 < a.crop_scale <= 1,
        "training.batch_size": t.batch_size >= 2,
        "training.accumulation_steps": t.accumulation_steps >= 1,
        "training.num_epochs": t.num_epochs >= 1,
        "data.num_workers": config.data.num_workers >= 0,
    }
    for key, ok in checks.items():
        if not ok:
            raise BadInput(f"config key '{key}': value out of range")
    if t.precision not in PRECISIONS:
        raise BadInput(f"config key 'training.precision': '{t.precision}' is not one of {', '.join(PRECISIONS)}")


def from_dict(values: dict) -> BackboneConfig:
    """Validate a nested dict into a `BackboneConfig`, registry names included."""
    config = build_dataclass(BackboneConfig, values)
    TRUNKS.get(config.model.library, key="model.library")
    POOLINGS.get(config.model.pooling, key="model.pooling")
    LOSSES.get(config.loss.type, key="loss.type")
    _check_ranges(config)
    return config
