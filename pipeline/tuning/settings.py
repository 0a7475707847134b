"""The optuna config YAML → frozen `TuneSettings`, validated once at load.

Keys: `study_name`, `direction` (maximize|minimize), `metric` (rsum, R@1, i2t_R@1, …), `sampler`,
`pruner`, `n_trials`, `timeout`, `train_split` (default `tuning`), `heartbeat_interval`,
`grace_period`, `max_retry`, `base_config` (a mapping, or a path relative to the optuna config),
`search_space` and `conditional`. Every search-space bound and choice is checked against the
experiment config schema, as the type the sampler draws (a `type: float` space on an int key fails), and
a `model`/`loss` key must be taken by some head or loss the study can sample, so a typo or a key no trial
would apply fails here with the key named, not hours into a sweep. The base
config may hold `model`/`loss` keys of several heads and losses: each trial applies only the keys of
the head and loss it samples (`TuneSettings.experiment`), every other key takes that head's default.
The base config may also be a backbone config (`xalign backbone-train`: an `augment` section, or a
`model` with `library`/`arch`/`text` and no `type`); its trials train backbones, one or two towers.
"""

import copy
from dataclasses import dataclass
from pathlib import Path

from encoding.errors import BadInput
from encoding.safe_load import shown
from pipeline.config import backbone as backbone_config
from pipeline.config.experiment import (
    ExperimentConfig,
    apply_overrides,
    from_dict,
    read_yaml_mapping,
    required_loss,
    without_foreign_options,
)
from pipeline.config.schema import option_names
from pipeline.heads import HEADS, HeadOptions
from pipeline.losses import LOSSES, LossOptions
from pipeline.training.choice import trainer_for
from pipeline.tuning.algorithms import METRICS, PRUNERS, SAMPLERS, build_pruner, build_sampler, normalise_choice
from pipeline.tuning.space import SearchSpace, parse_space

DIRECTIONS = ("maximize", "minimize")
DEFAULTS = {
    "direction": "maximize",
    "metric": "rsum",
    "sampler": {"type": "tpe", "seed": 0},
    "pruner": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 3},
    "n_trials": 20,
    "timeout": None,
    "train_split": "tuning",
    "heartbeat_interval": 10,
    "grace_period": 30,
    "max_retry": 3,
    "conditional": {},
}
REQUIRED = ("study_name", "base_config", "search_space")
POSITIVE_INTS = ("n_trials", "heartbeat_interval", "grace_period")


@dataclass(frozen=True)
class TuneSettings:
    """One sweep. `base` is the base experiment config as written (overrides applied), checked at load."""

    study_name: str
    direction: str
    metric: str
    sampler: dict
    pruner: dict
    n_trials: int
    timeout: float | None
    train_split: str
    heartbeat_interval: int
    grace_period: int
    max_retry: int
    base: dict
    space: SearchSpace
    source: str = "<dict>"

    @property
    def backbone(self) -> bool:
        """Whether the base config is a backbone config (trials run `xalign backbone-train`'s trainers)."""
        return is_backbone_config(self.base)

    def trainer(self, config) -> type:
        """The trainer class of a trial's config."""
        return trainer_for(config)

    def experiment(self, values: dict) -> tuple[ExperimentConfig, list[str]]:
        """The base config with `values` (config key → value) set, validated, keeping only the `model`/`loss`
        keys the chosen head and loss take; also the dotted keys that were applied (none for backbones)."""
        config = with_values(self.base, values)
        if self.backbone:
            return backbone_config.from_dict(config), []
        kept, _ = without_foreign_options(config)
        applied = [
            f"{section}.{key}" for section in ("model", "loss") for key in kept.get(section, {}) if key != "type"
        ]
        return from_dict(kept), sorted(applied)


def is_backbone_config(values: dict) -> bool:
    """A backbone config has an `augment` section, or a `model` naming a library/arch/text tower but no head type."""
    model = values.get("model")
    named = isinstance(model, dict) and "type" not in model and bool({"library", "arch", "text"} & set(model))
    return "augment" in values or named


def validate(values: dict) -> None:
    """BadInput unless `values` is a valid experiment config: a backbone config, or a head config whose
    `model`/`loss` keys of other heads and losses are dropped first."""
    if is_backbone_config(values):
        backbone_config.from_dict(values)
    else:
        from_dict(without_foreign_options(values)[0])


def with_values(base: dict, values: dict) -> dict:
    """A copy of the nested `base` with dotted keys set (`{"model.type": "mlp"}`)."""
    out = copy.deepcopy(base)
    for key, value in values.items():
        *sections, leaf = key.split(".")
        node = out
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return out


def load_settings(path: Path, overrides: list[str] = ()) -> TuneSettings:
    """Read and validate an optuna config; `overrides` (`key=value`) apply to its base experiment config."""
    path = Path(path)
    raw = read_yaml_mapping(path, "optuna config")
    try:
        return settings_from_dict(raw, base_dir=path.parent, overrides=overrides, source=str(path))
    except BadInput as err:
        raise BadInput(f"{path}: {err}") from err


def settings_from_dict(raw: dict, base_dir: Path = Path("."), overrides=(), source: str = "<dict>") -> TuneSettings:
    if not isinstance(raw, dict):
        raise BadInput(f"expected a mapping at the top level, got {shown(raw)}")
    valid = (*REQUIRED, *DEFAULTS)
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise BadInput(f"unknown key '{unknown[0]}'; valid keys: {', '.join(valid)}")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise BadInput(f"missing key '{missing[0]}'")
    values = {**copy.deepcopy(DEFAULTS), **raw}
    _check_scalars(values)
    base = _base_config(values["base_config"], base_dir, list(overrides))
    space = parse_space(
        values["search_space"], values["conditional"], lambda key, value: _check_value(base, key, value)
    )
    _check_sampled(base, space)
    sampler = normalise_choice(values["sampler"], "sampler", SAMPLERS)
    pruner = normalise_choice(values["pruner"], "pruner", PRUNERS)
    build_sampler(sampler, space), build_pruner(pruner)  # options are checked by constructing once
    return TuneSettings(
        study_name=values["study_name"],
        direction=values["direction"],
        metric=values["metric"],
        sampler=sampler,
        pruner=pruner,
        n_trials=values["n_trials"],
        timeout=values["timeout"],
        train_split=values["train_split"],
        heartbeat_interval=values["heartbeat_interval"],
        grace_period=values["grace_period"],
        max_retry=values["max_retry"],
        base=base,
        space=space,
        source=source,
    )


def _check_scalars(values: dict) -> None:
    name = values["study_name"]
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise BadInput(f"study_name: expected a non-empty name usable as a file name, got {shown(name)}")
    if values["direction"] not in DIRECTIONS:
        raise BadInput(f"direction: '{values['direction']}' is not one of {', '.join(DIRECTIONS)}")
    METRICS.get(values["metric"], key="metric")
    for key in POSITIVE_INTS:
        if not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] < 1:
            raise BadInput(f"{key}: expected a positive integer, got {shown(values[key])}")
    if not isinstance(values["max_retry"], int) or values["max_retry"] < 0:
        raise BadInput(f"max_retry: expected an integer >= 0, got {shown(values['max_retry'])}")
    if values["grace_period"] <= values["heartbeat_interval"]:
        raise BadInput("grace_period: must be longer than heartbeat_interval")
    timeout = values["timeout"]
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise BadInput(f"timeout: expected a positive number of seconds or null, got {shown(timeout)}")
    if not isinstance(values["train_split"], str):
        raise BadInput(f"train_split: expected a split name, got {shown(values['train_split'])}")


def _base_config(raw, base_dir: Path, overrides: list[str]) -> dict:
    """The base experiment config as a validated nested dict: inline, or a YAML file next to the optuna config."""
    if isinstance(raw, str):
        path = base_dir / raw
        if not path.is_file():
            raise BadInput(f"base_config: {path} not found")
        raw = read_yaml_mapping(path, "base config")
    if not isinstance(raw, dict):
        raise BadInput(f"base_config: expected a mapping or a path to an experiment YAML, got {shown(raw)}")
    base = apply_overrides(raw, overrides)
    try:
        validate(base)
    except BadInput as err:
        raise BadInput(f"base_config: {err}") from err
    return base


def _check_value(base: dict, key: str, value) -> None:
    """BadInput unless `key` = `value` is valid for some head/loss that takes the key (the base's own when it does)."""
    backbone = is_backbone_config(base)
    if key.count(".") != 1 and not (backbone and key.startswith(("model.text.", "model.fusion."))):
        raise BadInput(f"'{key}' is not a config key; use section.key, e.g. training.learning_rate")
    section, leaf = key.split(".", 1)
    values = with_values(base, {key: value})
    registry = ({"loss": LOSSES} if backbone else {"model": HEADS, "loss": LOSSES}).get(section)
    takers = [] if registry is None or leaf == "type" else _takers(registry, leaf)
    if takers:
        chosen = values[section].get("type", (HeadOptions if section == "model" else LossOptions).type)
        if chosen not in takers:
            values[section]["type"] = takers[0]
    elif registry is not None and leaf != "type":
        raise BadInput(f"unknown config key '{key}'; no {registry.kind} takes it")
    try:
        validate(values)
    except BadInput as err:
        if not takers:
            raise
        raise BadInput(f"{err} ({registry.kind}s that take '{key}': {', '.join(takers)})") from err


def _takers(registry, leaf: str) -> list[str]:
    """The registered heads (or losses) that take the option `leaf`."""
    return [name for name in registry.names() if leaf in option_names(registry.get(name))]


def _check_sampled(base: dict, space: SearchSpace) -> None:
    """BadInput for a `model`/`loss` search-space key that no head or loss the study can sample takes: no trial
    would apply it, yet it would be reported as a best parameter. (Backbone studies have no head registry.)"""
    if is_backbone_config(base):
        return
    keys = [("search_space", key, {}) for key in space.params]
    for parent, branches in space.conditional.items():
        keys += [(f"conditional.{parent}.{value}", key, {parent: value}) for value, b in branches.items() for key in b]
    for where, key, fixed in keys:
        section, leaf = key.split(".", 1)
        registry = {"model": HEADS, "loss": LOSSES}.get(section)
        if registry is None or leaf == "type":
            continue
        sampled = _sampled_types(base, space, section, fixed)
        takers = _takers(registry, leaf)
        if not sampled & set(takers):
            raise BadInput(
                f"{where}.{key}: no {registry.kind} this study samples ({', '.join(sorted(sampled))}) takes it, "
                f"so no trial would apply it; {registry.kind}s that take '{key}': {', '.join(takers)}"
            )


def _sampled_types(base: dict, space: SearchSpace, section: str, fixed: dict) -> set[str]:
    """The heads (`section` model) or losses (loss) a trial can run with, given the `fixed` conditional values."""

    def drawn(key: str) -> list:
        spec = space.params.get(key)
        if key in fixed:
            return [fixed[key]]
        return list(spec.choices) if spec is not None and spec.type == "categorical" else [None]

    names = set()
    for head in drawn("model.type"):
        for loss in drawn("loss.type"):
            chosen = {k: v for k, v in (("model.type", head), ("loss.type", loss)) if v is not None}
            values = with_values(base, chosen)
            if section == "model":
                names.add((values.get("model") or {}).get("type", HeadOptions.type))
            else:
                names.add((values.get("loss") or {}).get("type") or required_loss(values) or LossOptions.type)
    return names
