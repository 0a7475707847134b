"""Optuna config validation: every mistake fails at load with the key named; the shipped configs validate."""

from pathlib import Path

import optuna
import pytest
import yaml
from tune_support import write_optuna_config

from encoding.errors import BadInput
from pipeline.heads import HEADS
from pipeline.losses import LOSSES
from pipeline.tuning.algorithms import build_pruner, build_sampler
from pipeline.tuning.settings import load_settings
from pipeline.tuning.space import conditional_name

SHIPPED = sorted((Path(__file__).resolve().parents[3] / "optuna_configs").glob("*.yaml"))


def test_shipped_configs_exist_and_validate():
    assert {p.stem for p in SHIPPED} >= {"default", "siglip", "clip", "attention", "mlp"}
    for path in SHIPPED:
        settings = load_settings(path)
        build_sampler(settings.sampler, settings.space), build_pruner(settings.pruner)
        assert _names(settings, "model", "type") <= set(HEADS.names()), path
        assert _names(settings, "loss", "type") <= set(LOSSES.names()), path


def _names(settings, section: str, field: str) -> set:
    """The base config's value of `section.field` and every choice the search space has for it."""
    spec = settings.space.params.get(f"{section}.{field}")
    return {settings.base[section][field], *(spec.choices if spec else ())}


def test_shipped_config_samples_valid_experiments():
    """Draw a few points of every shipped space and validate each resulting experiment config."""
    for path in SHIPPED:
        settings = load_settings(path)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(5):
            trial = study.ask()
            settings.experiment(settings.space.sample(trial))
            study.tell(trial, 0.0)


def _edit(path: Path, change) -> Path:
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(sampler="annealing"), r"sampler\.type: unknown sampler 'annealing'; choose one of: grid"),
        (lambda r: r.update(pruner={"type": "median", "patience": 3}), r"pruner\.patience: not an option of median"),
        (lambda r: r.update(metric="R@2"), r"metric: unknown metric 'R@2'"),
        (lambda r: r.update(direction="up"), r"direction: 'up' is not one of maximize, minimize"),
        (lambda r: r.update(n_trial=3), r"unknown key 'n_trial'; valid keys: study_name"),
        (lambda r: r.pop("study_name"), r"missing key 'study_name'"),
        (
            lambda r: r["search_space"].update({"model.typo": {"type": "int", "low": 1, "high": 2}}),
            r"search_space\.model\.typo: unknown config key 'model\.typo'",
        ),
        (
            lambda r: r["search_space"].update({"model.type": {"type": "categorical", "choices": ["mlp", "nope"]}}),
            r"search_space\.model\.type: model\.type: unknown head 'nope'; choose one of: .*mlp",
        ),
        (
            lambda r: r["search_space"].update({"loss.type": {"type": "categorical", "choices": ["nope"]}}),
            r"search_space\.loss\.type: loss\.type: unknown loss 'nope'",
        ),
        (
            lambda r: r["search_space"].update({"training.learning_rate": {"type": "float", "low": 1, "high": 0.1}}),
            r"search_space\.training\.learning_rate: low \(1\) must be below high",
        ),
        (
            lambda r: r["search_space"].update(
                {"training.learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}
            ),
            r"search_space\.training\.learning_rate: log scale needs low > 0",
        ),
        (
            lambda r: r["search_space"].update({"model.num_layers": {"type": "int", "low": 1, "high": 2.5}}),
            r"search_space\.model\.num_layers\.high: expected an int",
        ),
        (
            lambda r: r["search_space"].update({"model.dropout": {"type": "uniform", "low": 0, "high": 1}}),
            r"search_space\.model\.dropout: expected a mapping with type: one of float, int, categorical",
        ),
        (
            lambda r: r["search_space"].update(
                {"model.dropout": {"type": "float", "low": 0, "high": 1, "choices": [1]}}
            ),
            r"search_space\.model\.dropout\.choices: not a float field",
        ),
        (
            lambda r: r["search_space"].update({"model.num_layers": {"type": "categorical", "choices": [1, 2.5]}}),
            r"search_space\.model\.num_layers: config key 'model\.num_layers': expected int",
        ),
        (
            lambda r: r.update(conditional={"model.dropout": {"x": {}}}),
            r"conditional\.model\.dropout: the parent key must be a categorical entry of search_space",
        ),
        (
            lambda r: r.update(conditional={"model.hidden_dim": {64: {}}}),
            r"conditional\.model\.hidden_dim\.64: not one of the choices of model\.hidden_dim: 16, 32",
        ),
        (
            lambda r: r.update(
                conditional={
                    "model.hidden_dim": {16: {"training.learning_rate": {"type": "float", "low": 1, "high": 2}}}
                }
            ),
            r"conditional\.model\.hidden_dim\.16\.training\.learning_rate: already in search_space",
        ),
        (
            lambda r: r.update(
                conditional={"model.hidden_dim": {16: {"model.num_heads": {"type": "int", "low": 0, "high": "x"}}}}
            ),
            r"conditional\.model\.hidden_dim\.16\.model\.num_heads\.high: expected an int",
        ),
        (lambda r: r.update(base_config="missing.yaml"), r"base_config: .*missing\.yaml not found"),
        (
            lambda r: r["base_config"]["training"].update(epochs=3),
            r"base_config: unknown config key 'training\.epochs'",
        ),
        (lambda r: r.update(grace_period=1), r"grace_period: must be longer than heartbeat_interval"),
        (
            lambda r: r.update(
                sampler={"type": "grid"},
                search_space={"training.learning_rate": {"type": "float", "low": 0.1, "high": 0.2}},
            ),
            r"search_space\.training\.learning_rate: the grid sampler needs",
        ),
    ],
)
def test_bad_optuna_config_names_the_key(tmp_path, change, message):
    path = _edit(write_optuna_config(tmp_path / "tune.yaml", tmp_path / "cache"), change)
    with pytest.raises(BadInput, match=message) as error:
        load_settings(path)
    assert str(path) in str(error.value)


def test_overrides_apply_to_the_base_config(tmp_path):
    path = write_optuna_config(tmp_path / "tune.yaml", tmp_path / "cache")
    settings = load_settings(path, ["data.cache=/elsewhere", "training.num_epochs=7"])
    assert settings.base["data"]["cache"] == "/elsewhere" and settings.base["training"]["num_epochs"] == 7
    with pytest.raises(BadInput, match=r"base_config: config key 'training\.num_epochs': expected int"):
        load_settings(path, ["training.num_epochs=seven"])


def test_base_config_path_is_relative_to_the_optuna_config(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "base.yaml").write_text(yaml.safe_dump({"name": "b", "model": {"type": "linear"}}))
    (tmp_path / "sweeps").mkdir()
    space = {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2}}  # linear has no hidden_dim
    path = write_optuna_config(
        tmp_path / "sweeps" / "tune.yaml", tmp_path, base_config="../experiments/base.yaml", search_space=space
    )
    assert load_settings(path).base["model"]["type"] == "linear"


def test_conditional_space_only_under_its_branch(tmp_path):
    space = {"model.type": {"type": "categorical", "choices": ["mlp", "linear"]}}
    conditional = {"model.type": {"mlp": {"model.num_layers": {"type": "int", "low": 1, "high": 3}}}}
    path = write_optuna_config(tmp_path / "tune.yaml", tmp_path, search_space=space, conditional=conditional)
    settings = load_settings(path)
    mlp = settings.space.sample(optuna.trial.FixedTrial({"model.type": "mlp", "model.num_layers|model.type=mlp": 2}))
    assert mlp == {"model.type": "mlp", "model.num_layers": 2}
    assert settings.space.sample(optuna.trial.FixedTrial({"model.type": "linear"})) == {"model.type": "linear"}
    assert settings.experiment(mlp)[0].model.num_layers == 2
    assert conditional_name("model.num_layers", "model.type", "mlp") in settings.space.grid()


def test_grid_sampler_enumerates_the_space(tmp_path):
    space = {
        "model.num_layers": {"type": "int", "low": 1, "high": 3},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
    }
    path = write_optuna_config(tmp_path / "tune.yaml", tmp_path, search_space=space, sampler="grid")
    grid = load_settings(path).space.grid()
    assert grid["model.num_layers"] == [1, 2, 3]
    assert grid["model.dropout"] == pytest.approx([0.0, 0.1, 0.2])
