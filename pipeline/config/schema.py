"""Nested dicts (YAML) → frozen dataclasses, every field type- and range-checked once, at load.

A field's range is looked up by its name in `RANGES` (one table for every config section, head and
loss: `dropout` means the same in all of them); string fields with a fixed vocabulary are in
`CHOICES`; list fields of a fixed length whose items share a range are in `TUPLES`. Errors are
`BadInput` naming the dotted key, what was expected and what was given.
A field whose type is a polymorphic section (a head's or a loss's options) is built as the class
that `resolve_class(hint, values, key)` picks from the mapping's `type`.
"""

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

from encoding.errors import BadInput
from encoding.safe_load import parse_yaml, shown

RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval of finite numbers; `None` bounds are open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return self.high is None or not (value > self.high or self.high_open and value == self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"a number in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
PROBABILITY = Range(0, 1, high_open=True)
FINITE = Range()

RANGES: dict[str, Range] = {
    # heads
    "output_dim": AT_LEAST_ONE,
    "hidden_dim": AT_LEAST_ONE,
    "num_heads": AT_LEAST_ONE,
    "num_layers": AT_LEAST_ONE,
    "num_tokens": AT_LEAST_ONE,
    "num_queries": AT_LEAST_ONE,
    "window": AT_LEAST_ONE,
    "num_global": NON_NEGATIVE,
    "rerank_k": AT_LEAST_ONE,
    "dropout": PROBABILITY,
    "momentum": PROBABILITY,
    # losses
    "temperature": POSITIVE,
    "bias": FINITE,
    "alpha": Range(0, 1),
    "alpha_warmup_steps": NON_NEGATIVE,
    "queue_size": AT_LEAST_ONE,
    "label_smoothing": PROBABILITY,
    "hard_negative_beta": NON_NEGATIVE,
    "mixup_alpha": NON_NEGATIVE,
    "itc_weight": NON_NEGATIVE,
    # training
    "batch_size": AT_LEAST_ONE,
    "learning_rate": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "num_epochs": AT_LEAST_ONE,
    "patience": AT_LEAST_ONE,
    "min_epochs": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE,
    "seed": NON_NEGATIVE,
    "grad_clip": NON_NEGATIVE,
    "eval_batch_size": AT_LEAST_ONE,
    "accumulation_steps": AT_LEAST_ONE,
    # backbone mode
    "num_workers": NON_NEGATIVE,
    "patch_size": AT_LEAST_ONE,
    "flip": Range(0, 1),
    "color_jitter": NON_NEGATIVE,
    "rotation": Range(0, 180),
    "crop_scale": Range(0, 1, low_open=True),
    "max_length": Range(2),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "epoch_sampling": ("image", "caption"),
    "precision": ("auto", "fp32", "fp16", "bf16"),
    "attention": ("self", "sparse"),
    "optimizer": ("adamw", "lion"),  # pipeline.training.optimizers.OPTIMIZERS (a test keeps the two in step)
}
TUPLES: dict[str, tuple[int, Range]] = {
    "betas": (2, PROBABILITY),  # (β1, β2) of the optimizer, each in [0, 1); null: the optimizer's own
}


def check_type(value, annotation, key: str):
    """`value` as `annotation` (ints are accepted for floats), or BadInput naming the key."""
    expected = annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        expected = typing.get_args(annotation)
    accepts_float = annotation is float or (isinstance(expected, tuple) and float in expected)
    if accepts_float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool) or not isinstance(value, expected):
        name = getattr(annotation, "__name__", str(annotation))
        raise BadInput(f"config key '{key}': expected {name}, got {type(value).__name__} {shown(value)}")
    return value


def check_value(name: str, value, key: str) -> None:
    """The range or choice check of field `name` (BadInput naming `key`); None and booleans pass."""
    if value is None or isinstance(value, bool):
        return
    if name in TUPLES:
        check_items(value, *TUPLES[name], key)
        return
    if name in CHOICES and value not in CHOICES[name]:
        raise BadInput(f"config key '{key}': {shown(value)} is not one of {', '.join(CHOICES[name])}")
    if name in RANGES and isinstance(value, int | float) and value not in RANGES[name]:
        raise BadInput(f"config key '{key}': expected {RANGES[name]}, got {shown(value)}")


def check_items(value, length: int, item: Range, key: str) -> None:
    """A list of `length` numbers, each in `item` (BadInput naming `key`)."""
    numbers = isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not numbers or len(value) != length:
        raise BadInput(f"config key '{key}': expected a list of {length} numbers, got {shown(value)}")
    for v in value:
        if v not in item:
            raise BadInput(f"config key '{key}': expected each item to be {item}, got {shown(value)}")


def check_run_name(name: str, key: str = "name") -> str:
    """A run name is one path component of letters, digits and `._-`, not `.` or `..`."""
    if not RUN_NAME.fullmatch(name) or name in (".", ".."):
        raise BadInput(
            f"config key '{key}': {shown(name)} is not a run name; use letters, digits, '.', '_' and '-' "
            "(one path component, not '.' or '..')"
        )
    return name


def optional_section(hint) -> type | None:
    """The dataclass of a `Section | None` hint (a section a config may leave out), else None."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        sections = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return sections[0] if sections else None
    return None


def build(cls, values, prefix: str = "", resolve_class: Callable | None = None):
    """`cls` (a frozen dataclass, nested ones included) from a mapping, type- and range-checked."""
    if not isinstance(values, dict):
        raise BadInput(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {shown(values)}")
    if resolve_class is not None:
        cls = resolve_class(cls, values, prefix.rstrip("."))
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(map(str, set(values) - set(names)))
    if unknown:
        raise BadInput(f"unknown config key {shown(prefix + unknown[0])}; valid keys here: {', '.join(names)}")
    kwargs = {}
    for name, value in values.items():
        key, hint = prefix + name, hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, {} if value is None else value, key + ".", resolve_class)
        elif (section := optional_section(hint)) is not None and value is not None:
            kwargs[name] = build(section, value, key + ".", resolve_class)
        else:
            kwargs[name] = check_type(value, hint, key)
            check_value(name, kwargs[name], key)
    if "name" in kwargs and not prefix:
        check_run_name(kwargs["name"])
    return cls(**kwargs)


def fix_exponent_floats(values):
    """YAML 1.1 reads `1e-4` as a string: such strings (nested too, in lists too) become floats."""
    if isinstance(values, dict):
        return {k: fix_exponent_floats(v) for k, v in values.items()}
    if isinstance(values, list):
        return [fix_exponent_floats(v) for v in values]
    return parse_scalar(values) if isinstance(values, str) and values[:1].isdigit() else values


def parse_scalar(raw: str):
    """YAML scalar parsing, plus floats in exponent form without a dot (`1e-4`)."""
    value = parse_yaml(raw, f"--set value {shown(raw)}") if raw else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def options_class(constructor) -> type:
    """The options dataclass a head builder or loss class declares as the type of its `options` parameter."""
    target = constructor.__init__ if isinstance(constructor, type) else constructor
    return typing.get_type_hints(target)["options"]


def option_names(constructor) -> list[str]:
    """The option keys `constructor` takes (its options dataclass's fields)."""
    return [f.name for f in dataclasses.fields(options_class(constructor))]


def registered_options(registry) -> Callable:
    """A `build` hook for a polymorphic section: the options class of the `registry` entry named by the
    mapping's `type`; a key that entry does not take is BadInput naming the key, the entry and its keys."""

    def resolve(cls, values: dict, key: str) -> type:
        name = values.get("type")
        if not isinstance(name, str):
            raise BadInput(
                f"config key '{key}.type': expected a {registry.kind} name; "
                f"choose one of: {', '.join(registry.names())}"
            )
        constructor = registry.get(name, key=f"{key}.type")
        taken = option_names(constructor)
        foreign = sorted(set(values) - set(taken))
        if foreign:
            raise BadInput(
                f"config key '{key}.{foreign[0]}': {registry.kind} '{name}' does not take it; "
                f"its keys: {', '.join(taken)}"
            )
        return options_class(constructor)

    return resolve
