"""Experiment config: YAML → frozen dataclasses, validated once at load.

Sections: `name`, `data`, `model` (the head's options: keys and defaults come from the head named by
`model.type`), `loss` (likewise from `loss.type`), `training`. Unknown keys, keys the chosen head or
loss does not take, wrong types, out-of-range values and unknown names raise `BadInput` naming the key
(see `pipeline.config.schema`). `--set section.key=value` overrides are parsed as YAML scalars (`1e-4`,
`true`, `[1, 2]`). `to_dict()` gives the fully resolved config (every default filled in).
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml

from encoding.errors import BadInput
from encoding.safe_load import load_yaml
from pipeline import heads, losses
from pipeline.config import schema
from pipeline.heads import HEADS, HeadOptions
from pipeline.losses import LOSSES, LossOptions

T = TypeVar("T")
POLYMORPHIC = {HeadOptions: heads.resolve_head, LossOptions: losses.resolve_loss}


@dataclass(frozen=True)
class DataConfig:
    cache: str = "pretrain_encoded/demo-1500"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


@dataclass(frozen=True)
class HeadDataConfig(DataConfig):
    stream: bool | None = (
        None  # stream the train inputs from the shards (None: only when they exceed the memory budget)
    )


@dataclass(frozen=True)
class TrainingConfig:
    """The training loop's settings, the same for head and backbone training."""

    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    num_epochs: int = 20
    patience: int = 5  # epochs without a better val rsum before stopping, counted from min_epochs on
    min_epochs: int = 0  # early stopping never stops before this many epochs
    warmup_steps: int = 100  # optimizer steps of linear learning-rate warm-up
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # autocast on CUDA (bf16 where supported); evaluation is always fp32
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    accumulation_steps: int = 1  # micro-batches per optimizer step
    epoch_sampling: str = "image"  # "image": each image once with one random caption; "caption": every caption
    compile: bool = False
    eval_batch_size: int = 4096
    tensorboard: bool = False  # also log every epoch to results/<name>/tensorboard
    optimizer: str = "adamw"  # adamw (torch) or lion (timm's Lion: sign updates, decoupled weight decay)
    betas: list | None = None  # [β1, β2] of either optimizer; null: its own (AdamW [0.9, 0.999], Lion [0.9, 0.99])


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: HeadDataConfig = field(default_factory=HeadDataConfig)
    model: HeadOptions = field(default_factory=lambda: heads.options_for(HeadOptions.type, {}))
    loss: LossOptions = field(default_factory=lambda: losses.options_for(LossOptions.type, {}))
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_section(cls, values: dict, key: str) -> type:
    """`schema.build` hook: `model` and `loss` are the options class of the head or loss they name
    (the section's default name when `type` is left out)."""
    for base, resolve in POLYMORPHIC.items():
        if issubclass(cls, base):
            return resolve(cls, {"type": base.type, **values}, key)
    return cls


def build_dataclass(cls: type[T], values: dict) -> T:
    """Validate a nested dict (YAML values, exponent floats included) into the frozen dataclass `cls`."""
    return schema.build(cls, schema.fix_exponent_floats(values), resolve_class=resolve_section)


def required_loss(values: dict) -> str | None:
    """The loss the head named in `values["model"]` must train with (`HeadOptions.required_loss`), if any."""
    model = values.get("model")
    name = model.get("type") if isinstance(model, dict) else None
    if not isinstance(name, str) or name not in HEADS.names():
        return None
    return schema.options_class(HEADS.get(name)).required_loss


def with_required_loss(values: dict) -> dict:
    """`values` with the head's required loss as `loss.type` when the config leaves the type out."""
    needed, loss = required_loss(values), values.get("loss")
    if needed is None or not (loss is None or isinstance(loss, dict) and "type" not in loss):
        return values
    return {**values, "loss": {**(loss or {}), "type": needed}}


def check_pairing(config: ExperimentConfig) -> ExperimentConfig:
    """Refuse a head trained with a loss it cannot use, and options that would do nothing for the head."""
    needed, loss = config.model.required_loss, config.loss.type
    if needed is not None and loss != needed:
        raise BadInput(f"config key 'loss.type': head '{config.model.type}' trains with loss '{needed}', not '{loss}'")
    pair_heads = [name for name in HEADS.names() if schema.options_class(HEADS.get(name)).required_loss == loss]
    if needed is None and pair_heads:
        raise BadInput(
            f"config key 'loss.type': loss '{loss}' trains {', '.join(pair_heads)}, not '{config.model.type}'"
        )
    return config


def from_dict(values: dict) -> ExperimentConfig:
    """Validate a nested dict into an `ExperimentConfig`."""
    return check_pairing(build_dataclass(ExperimentConfig, with_required_loss(values)))


def foreign_options(values: dict) -> dict[str, list[str]]:
    """{section: keys} of `model`/`loss` keys that the section's chosen head/loss does not take but another
    registered one does (a tune base config may hold keys for several heads); a key no head or loss takes
    is BadInput."""
    out = {}
    for section, registry, base in (("model", HEADS, HeadOptions), ("loss", LOSSES, LossOptions)):
        options = values.get(section)
        if not isinstance(options, dict):
            continue
        chosen = options.get("type", (section == "loss" and required_loss(values)) or base.type)
        taken = set(schema.option_names(registry.get(chosen, key=f"{section}.type")))
        anywhere = {key for name in registry.names() for key in schema.option_names(registry.get(name))}
        unknown = sorted(set(options) - anywhere)
        if unknown:
            raise BadInput(
                f"unknown config key '{section}.{unknown[0]}'; no {registry.kind} takes it "
                f"(valid keys of {registry.kind} '{chosen}': {', '.join(sorted(taken))})"
            )
        out[section] = sorted(set(options) - taken)
    return out


def without_foreign_options(values: dict) -> tuple[dict, list[str]]:
    """(`values` less the `model`/`loss` keys the chosen head/loss does not take, the dotted keys dropped)."""
    dropped = foreign_options(values)
    kept = {
        k: ({kk: vv for kk, vv in v.items() if kk not in dropped.get(k, ())} if k in dropped else v)
        for k, v in values.items()
    }
    return kept, [f"{section}.{key}" for section, keys in dropped.items() for key in keys]


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
        try:
            node[leaf] = schema.parse_scalar(raw)
        except BadInput as err:
            raise BadInput(f"--set {key}: {err}") from err
    return values


def read_yaml_mapping(path: Path, what: str = "config") -> dict:
    """The mapping at the top of a YAML file, or BadInput naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: {what} file not found")
    values = load_yaml(path)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BadInput(f"{path}: expected a mapping of config sections at the top level, got {type(values).__name__}")
    return values


def load_config(path: Path, overrides: list[str] = (), validate: Callable[[dict], T] = from_dict) -> T:
    """Read a YAML config, apply `--set` overrides and validate it (`from_dict` by default); errors name the file."""
    values = read_yaml_mapping(path)
    try:
        return validate(apply_overrides(values, list(overrides)))
    except BadInput as err:
        raise BadInput(f"{path}: {err}") from err


def save_config(config, path: Path) -> None:
    """Write a config dataclass (anything with `to_dict()`) as YAML that `load_config` reads back."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
