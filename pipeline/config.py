"""Experiment config: YAML → frozen dataclasses, validated once at load.

Unknown keys, wrong types and unknown head/loss names raise `BadInput` naming the key and the
valid choices. `--set section.key=value` overrides are parsed as YAML scalars (`1e-4`, `true`, `[1, 2]`).
"""

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from encoding.errors import BadInput

T = typing.TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    cache: str = "pretrain_encoded/demo"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


@dataclass(frozen=True)
class ModelConfig:
    type: str = "mlp"
    output_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.1
    num_heads: int = 4
    num_layers: int = 2
    learnable_temp: bool = True
    use_bn: bool = False
    momentum: float = 0.995
    residual: bool = False  # mlp: FuseMix-style residual blocks
    num_tokens: int = 8  # attention, cross_modal: tokens each vector is split into


@dataclass(frozen=True)
class LossConfig:
    type: str = "clip"
    temperature: float | None = None  # None: the loss's own initial value (0.07; siglip 0.1, i.e. scale 10)
    alpha: float = 0.4  # blip: momentum distillation weight
    queue_size: int = 4096  # blip, infonce_queue: must be a multiple of training.batch_size
    label_smoothing: float | None = None  # align (None: 0.1)
    hard_negative_beta: float = 0.0  # every loss: 0 = off
    mixup_alpha: float = 0.0  # every loss: FuseMix latent mixup Beta(α, α); 0 = off


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    num_epochs: int = 20
    patience: int = 5
    warmup_steps: int = 100
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    grad_clip: float = 1.0
    epoch_sampling: str = "image"  # "image": each image once with one random caption; "caption": every caption
    compile: bool = False
    eval_batch_size: int = 4096


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "training.epoch_sampling": ("image", "caption"),
    "training.precision": ("auto", "fp32", "fp16", "bf16"),
}
NON_NEGATIVE = (
    "loss.alpha",
    "loss.label_smoothing",
    "loss.hard_negative_beta",
    "loss.mixup_alpha",
    "training.grad_clip",
)
POSITIVE = (
    "loss.temperature",
    "loss.queue_size",
    "model.output_dim",
    "model.hidden_dim",
    "model.num_heads",
    "model.num_tokens",
    "training.batch_size",
    "training.learning_rate",
    "training.eval_batch_size",
)


def _check_type(value, annotation, key: str):
    """`value` as `annotation` (ints are accepted for floats), or BadInput naming the key."""
    expected = annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        expected = typing.get_args(annotation)
    accepts_float = annotation is float or (isinstance(expected, tuple) and float in expected)
    if accepts_float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool) or not isinstance(value, expected):
        name = getattr(annotation, "__name__", str(annotation))
        raise BadInput(f"config key '{key}': expected {name}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, values: dict, prefix: str = ""):
    """`cls` (a frozen dataclass, nested ones included) from a dict, type- and range-checked."""
    if not isinstance(values, dict):
        raise BadInput(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise BadInput(f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(names)}")
    kwargs = {}
    for name, value in values.items():
        key, hint = prefix + name, hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, key + ".")
        else:
            kwargs[name] = _check_type(value, hint, key)
            if key in CHOICES and value not in CHOICES[key]:
                raise BadInput(f"config key '{key}': '{value}' is not one of {', '.join(CHOICES[key])}")
            _check_range(key, kwargs[name])
    return cls(**kwargs)


def _check_range(key: str, value) -> None:
    if value is None or isinstance(value, bool):
        return
    if key in POSITIVE and value <= 0:
        raise BadInput(f"config key '{key}': expected a positive number, got {value!r}")
    if key in NON_NEGATIVE and value < 0:
        raise BadInput(f"config key '{key}': expected a number >= 0, got {value!r}")


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings to a nested dict (a copy)."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--set '{item}': expected key=value, e.g. training.learning_rate=1e-4")
        *sections, leaf = key.split(".")
        node = values
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise BadInput(f"--set '{item}': '{section}' is not a section")
        node[leaf] = _parse_scalar(raw)
    return values


def _parse_scalar(raw: str):
    """YAML scalar parsing, plus floats in exponent form without a dot (YAML 1.1 reads `1e-4` as a string)."""
    value = yaml.safe_load(raw) if raw else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _fix_exponent_floats(values):
    if isinstance(values, dict):
        return {k: _fix_exponent_floats(v) for k, v in values.items()}
    return _parse_scalar(values) if isinstance(values, str) and values[:1].isdigit() else values


def build_dataclass(cls, values: dict):
    """Validate a nested dict (YAML values, exponent floats included) into the frozen dataclass `cls`."""
    return _build(cls, _fix_exponent_floats(values))


def from_dict(values: dict) -> ExperimentConfig:
    """Validate a nested dict into an `ExperimentConfig`, registry names included."""
    from pipeline.heads import HEADS
    from pipeline.losses import LOSSES

    config = build_dataclass(ExperimentConfig, values)
    HEADS.get(config.model.type, key="model.type")
    LOSSES.get(config.loss.type, key="loss.type")
    return config


def load_config(path: Path, overrides: list[str] = (), validate: Callable[[dict], T] = from_dict) -> T:
    """Read a YAML config, apply `--set` overrides and validate it (`from_dict` by default); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise BadInput(f"{path}: not valid YAML ({err})") from err
    try:
        return validate(apply_overrides(values, list(overrides)))
    except BadInput as err:
        raise BadInput(f"{path}: {err}") from err


def save_config(config, path: Path) -> None:
    """Write a config dataclass (anything with `to_dict()`) as YAML that `load_config` reads back."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
