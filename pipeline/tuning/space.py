"""Search spaces: one `{type: float|int|categorical, low, high, log, step, choices}` per config key,
plus spaces that apply only when a categorical key takes a given value (`conditional`).

A parameter's Optuna name is its config key (`training.learning_rate`); a conditional one is named
`key|parent=value` (`model.num_heads|model.type=attention`), so branches never share a distribution.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from encoding.errors import BadInput
from encoding.safe_load import shown

SPEC_FIELDS = {
    "float": ("low", "high", "log", "step"),
    "int": ("low", "high", "log", "step"),
    "categorical": ("choices",),
}
CATEGORICAL_TYPES = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of the search space."""

    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: optuna.trial.BaseTrial, name: str):
        """A value for `name` drawn by `trial` (a real, fixed or frozen trial)."""
        if self.type == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        suggest = trial.suggest_int if self.type == "int" else trial.suggest_float
        return suggest(name, self.low, self.high, log=self.log, **({"step": self.step} if self.step else {}))

    def extremes(self) -> tuple:
        """The values that bound what `suggest` can return, of the type it returns: checked against the config
        at load (`type: float` on an int key fails here, not in every trial)."""
        if self.type == "categorical":
            return self.choices
        return (self.low, self.high) if self.type == "int" else (float(self.low), float(self.high))

    def grid_values(self, name: str) -> list:
        """Every value of this dimension, for the grid sampler."""
        if self.type == "categorical":
            return list(self.choices)
        if self.log or self.step is None and self.type == "float":
            raise BadInput(f"search_space.{name}: the grid sampler needs categorical choices or a linear step")
        step, values, value = self.step or 1, [], self.low
        while value <= self.high + 1e-12:
            values.append(value)
            value = self.low + len(values) * step
        return values


def conditional_name(key: str, parent: str, value) -> str:
    return f"{key}|{parent}={value}"


@dataclass(frozen=True)
class SearchSpace:
    """`params`: config key → spec; `conditional`: parent key → {parent value → {config key → spec}}."""

    params: dict[str, ParamSpec]
    conditional: dict[str, dict[Any, dict[str, ParamSpec]]] = field(default_factory=dict)

    def sample(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Config key → value for one trial; conditional keys only under their parent's drawn value."""
        values = {key: spec.suggest(trial, key) for key, spec in self.params.items()}
        for parent, branches in self.conditional.items():
            branch = branches.get(values[parent], {})
            for key, spec in branch.items():
                values[key] = spec.suggest(trial, conditional_name(key, parent, values[parent]))
        return values

    def grid(self) -> dict[str, list]:
        """Optuna parameter name → every value, conditional branches included."""
        grid = {key: spec.grid_values(key) for key, spec in self.params.items()}
        for parent, branches in self.conditional.items():
            for value, branch in branches.items():
                for key, spec in branch.items():
                    name = conditional_name(key, parent, value)
                    grid[name] = spec.grid_values(name)
        return grid


def parse_spec(raw, where: str) -> ParamSpec:
    """A spec mapping → `ParamSpec`, or BadInput naming `where` (e.g. `search_space.training.learning_rate`)."""
    if not isinstance(raw, dict) or raw.get("type") not in SPEC_FIELDS:
        raise BadInput(f"{where}: expected a mapping with type: one of {', '.join(SPEC_FIELDS)}; got {shown(raw)}")
    kind = raw["type"]
    unknown = sorted(set(raw) - {"type", *SPEC_FIELDS[kind]})
    if unknown:
        raise BadInput(f"{where}.{unknown[0]}: not a {kind} field; valid fields: type, {', '.join(SPEC_FIELDS[kind])}")
    if kind == "categorical":
        return _categorical(raw.get("choices"), where)
    return _numeric(kind, raw, where)


def _categorical(choices, where: str) -> ParamSpec:
    if not isinstance(choices, list) or not choices:
        raise BadInput(f"{where}.choices: expected a non-empty list, got {shown(choices)}")
    bad = [c for c in choices if not isinstance(c, CATEGORICAL_TYPES)]
    if bad:
        raise BadInput(f"{where}.choices: {shown(bad[0])} is not a str, int, float, bool or null")
    return ParamSpec("categorical", choices=tuple(choices))


def _numeric(kind: str, raw: dict, where: str) -> ParamSpec:
    number = int if kind == "int" else (int, float)
    values = {}
    for name in ("low", "high", "step"):
        value = raw.get(name)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if (value is not None or name != "step") and (not isinstance(value, number) or isinstance(value, bool)):
            raise BadInput(f"{where}.{name}: expected {'an int' if kind == 'int' else 'a number'}, got {shown(value)}")
        values[name] = value
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise BadInput(f"{where}.log: expected true or false, got {shown(log)}")
    if values["low"] >= values["high"]:
        raise BadInput(f"{where}: low ({values['low']}) must be below high ({values['high']})")
    if log and (values["low"] <= 0 or values["step"] is not None):
        raise BadInput(f"{where}: log scale needs low > 0 and no step")
    if values["step"] is not None and values["step"] <= 0:
        raise BadInput(f"{where}.step: must be positive, got {values['step']}")
    return ParamSpec(kind, values["low"], values["high"], log, values["step"])


def parse_space(raw_params, raw_conditional, check: Callable[[str, Any], None], where: str = "") -> SearchSpace:
    """Validate the `search_space` and `conditional` mappings; `check(key, value)` raises BadInput for a value
    the experiment config refuses (unknown key, wrong type, unknown head or loss name)."""
    if not isinstance(raw_params, dict) or not raw_params:
        raise BadInput(f"{where}search_space: expected a non-empty mapping of config key → spec")
    params = {key: _checked(key, spec, check, f"{where}search_space.{key}") for key, spec in raw_params.items()}
    conditional = {}
    for parent, branches in (raw_conditional or {}).items():
        at = f"{where}conditional.{parent}"
        if parent not in params or params[parent].type != "categorical":
            raise BadInput(f"{at}: the parent key must be a categorical entry of search_space")
        if not isinstance(branches, dict):
            raise BadInput(f"{at}: expected a mapping of {parent} value → search space")
        conditional[parent] = {}
        for value, branch in branches.items():
            if value not in params[parent].choices:
                choices = ", ".join(map(str, params[parent].choices))
                raise BadInput(f"{at}.{value}: not one of the choices of {parent}: {choices}")
            if not isinstance(branch, dict):
                raise BadInput(f"{at}.{value}: expected a mapping of config key → spec")
            clash = sorted(set(branch) & set(params))
            if clash:
                raise BadInput(
                    f"{at}.{value}.{clash[0]}: already in search_space; a key is either fixed or conditional"
                )
            conditional[parent][value] = {
                key: _checked(key, spec, check, f"{at}.{value}.{key}") for key, spec in branch.items()
            }
    return SearchSpace(params, conditional)


def _checked(key: str, raw, check: Callable[[str, Any], None], where: str) -> ParamSpec:
    spec = parse_spec(raw, where)
    for value in spec.extremes():
        try:
            check(key, value)
        except BadInput as err:
            raise BadInput(f"{where}: {err}") from err
    return spec
