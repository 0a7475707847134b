"""Options belong to their head and loss: foreign keys refused, each head's own defaults resolved and
written, every field range-checked, and a tune base config holding keys of several heads."""

import dataclasses
import math
import typing

import pytest
import yaml

from encoding.errors import BadInput
from pipeline import cli, heads, losses
from pipeline.config.backbone import BackboneConfig
from pipeline.config.experiment import ExperimentConfig, from_dict, schema, without_foreign_options

HEAD_NAMES = heads.HEADS.names()
LOSS_NAMES = losses.LOSSES.names()


def _train_argv(tmp_path, cache, *overrides):
    config = tmp_path / "c.yaml"
    config.write_text(f"name: r\ndata: {{cache: {cache}}}\ntraining: {{num_epochs: 1, batch_size: 8, device: cpu}}\n")
    return ["train", str(config), *[a for o in overrides for a in ("--set", o)]]


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_a_key_the_head_does_not_take_is_exit_2_naming_it(name, synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    taken = schema.option_names(heads.HEADS.get(name))
    foreign = next(k for k in ("num_heads", "use_bn", "momentum", "residual", "dropout") if k not in taken)
    argv = _train_argv(tmp_path, synthetic_cache, f"model.type={name}", f"model.{foreign}=1")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"config key 'model.{foreign}': head '{name}' does not take it; its keys: type, learnable_temp" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_a_key_the_loss_does_not_take_is_exit_2_naming_it(name, synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    taken = schema.option_names(losses.LOSSES.get(name))
    foreign = next(k for k in ("alpha", "queue_size", "bias", "label_smoothing") if k not in taken)
    assert cli.main(_train_argv(tmp_path, synthetic_cache, f"loss.type={name}", f"loss.{foreign}=1")) == 2
    assert f"config key 'loss.{foreign}': loss '{name}' does not take it" in capsys.readouterr().err


def test_unset_keys_take_the_heads_own_defaults_and_the_run_writes_them(synthetic_cache, tmp_path, monkeypatch):
    config = from_dict({"model": {"type": "align"}})
    assert config.model.hidden_dim == 2048 and config.model.use_bn is True
    assert from_dict({"model": {"type": "mlp"}}).model.num_layers == 1
    assert from_dict({"loss": {"type": "siglip"}}).loss.temperature == 0.1
    monkeypatch.chdir(tmp_path)
    argv = _train_argv(tmp_path, synthetic_cache, "model.type=align", "model.output_dim=8")
    assert cli.main(argv) == 0
    written = yaml.safe_load((tmp_path / "results" / "r" / "config.yaml").read_text())
    assert written["model"] == {
        "type": "align",
        "learnable_temp": True,
        "output_dim": 8,
        "hidden_dim": 2048,
        "dropout": 0.1,
        "use_bn": True,
    }
    assert written["loss"] == {"type": "clip", "hard_negative_beta": 0.0, "mixup_alpha": 0.0, "temperature": 0.07}


def _option_classes():
    for registry in (heads.HEADS, losses.LOSSES):
        for name in registry.names():
            yield schema.options_class(registry.get(name))


def _all_fields():
    sections = [ExperimentConfig, BackboneConfig]
    classes = list(_option_classes())
    while sections:
        cls = sections.pop()
        classes.append(cls)
        hints = typing.get_type_hints(cls).values()
        sections += [h for h in hints if dataclasses.is_dataclass(h)]
        sections += [schema.optional_section(h) for h in hints if schema.optional_section(h) is not None]
    for cls in classes:
        for f in dataclasses.fields(cls):
            yield cls, f.name, typing.get_type_hints(cls)[f.name]


def test_every_numeric_field_has_a_range_and_every_string_field_a_vocabulary_or_free_text():
    free_text = {"name", "cache", "train_split", "val_split", "test_split", "device", "library", "arch", "weights"}
    free_text |= {"tokenizer", "pooling", "trainable"}  # a dir or hub name; registry names; a checked pattern
    for cls, name, hint in _all_fields():
        if hint in (int, float) or hint == int | None:
            assert name in schema.RANGES, f"{cls.__name__}.{name} has no range"
        elif hint in (str, str | None) and name != "type":
            assert name in schema.CHOICES or name in free_text, f"{cls.__name__}.{name}"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("model.dropout", 1.0, r"in \[0, 1\)"),
        ("model.hidden_dim", 0, ">= 1"),
        ("model.num_layers", 0, ">= 1"),
        ("loss.temperature", 0.0, "> 0"),
        ("loss.temperature", math.inf, "> 0"),
        ("training.learning_rate", math.nan, "> 0"),
        ("training.weight_decay", -1, ">= 0"),
        ("training.warmup_steps", -10, ">= 0"),
        ("training.grad_clip", math.nan, ">= 0"),
        ("training.num_epochs", -1, ">= 1"),
        ("training.min_epochs", -1, ">= 0"),
    ],
)
def test_out_of_range_values_name_the_key(key, value, expected):
    section, leaf = key.split(".")
    with pytest.raises(BadInput, match=rf"'{key}': expected .*{expected}"):
        from_dict({section: {leaf: value}})


def test_momentum_and_alpha_ranges():
    with pytest.raises(BadInput, match=r"'model.momentum': expected a number in \[0, 1\)"):
        from_dict({"model": {"type": "blip", "momentum": 5}})
    with pytest.raises(BadInput, match=r"'loss.alpha': expected a number in \[0, 1\]"):
        from_dict({"loss": {"type": "blip", "alpha": 1.5}})


def test_a_tune_base_config_may_hold_keys_of_several_heads():
    values = {"model": {"type": "mlp", "num_layers": 2, "num_heads": 8, "use_bn": False}, "loss": {"queue_size": 64}}
    kept, dropped = without_foreign_options(values)
    assert kept["model"] == {"type": "mlp", "num_layers": 2}
    assert dropped == ["model.num_heads", "model.use_bn", "loss.queue_size"]
    with pytest.raises(BadInput, match=r"unknown config key 'model.wings'; no head takes it"):
        without_foreign_options({"model": {"type": "mlp", "wings": 2}})
