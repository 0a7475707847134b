"""Config loading: YAML → frozen dataclasses, overrides with type conversion, errors naming the key."""

import dataclasses

import pytest

from encoding.errors import BadInput
from pipeline import cli
from pipeline.config.experiment import ExperimentConfig, apply_overrides, from_dict, load_config, save_config


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_loads_into_frozen_dataclasses(tmp_path):
    config = load_config(
        write(tmp_path, "name: x\nmodel:\n  type: mlp\n  output_dim: 64\ntraining:\n  learning_rate: 1e-4\n")
    )
    assert isinstance(config, ExperimentConfig)
    assert config.model.output_dim == 64
    assert config.training.learning_rate == pytest.approx(1e-4)  # YAML 1.1 would read 1e-4 as a string
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.output_dim = 3


def test_overrides_convert_types(tmp_path):
    config = load_config(
        write(tmp_path, "name: x\n"),
        ["training.learning_rate=3e-4", "model.residual=true", "training.num_epochs=7", "name=renamed"],
    )
    assert config.training.learning_rate == pytest.approx(3e-4)
    assert config.model.residual is True
    assert config.training.num_epochs == 7
    assert config.name == "renamed"


def test_int_is_accepted_for_float_but_not_string_for_int():
    assert from_dict({"training": {"learning_rate": 1}}).training.learning_rate == 1.0
    with pytest.raises(BadInput, match=r"'training.num_epochs': expected int, got str"):
        from_dict({"training": {"num_epochs": "ten"}})
    with pytest.raises(BadInput, match=r"'model.output_dim': expected int, got bool"):
        from_dict({"model": {"output_dim": True}})


def test_unknown_key_names_key_and_valid_choices(tmp_path):
    with pytest.raises(BadInput, match=r"unknown config key 'training.lr'; valid keys here: batch_size, learning_rate"):
        load_config(write(tmp_path, "training:\n  lr: 0.1\n"))
    with pytest.raises(BadInput, match=r"unknown config key 'optimizer'"):
        from_dict({"optimizer": {}})


def test_unknown_registry_name_lists_registered_names():
    with pytest.raises(BadInput, match=r"model.type: unknown head 'transformer'; choose one of: .*mlp"):
        from_dict({"model": {"type": "transformer"}})
    with pytest.raises(BadInput, match=r"loss.type: unknown loss 'triplet'; choose one of: .*clip"):
        from_dict({"loss": {"type": "triplet"}})


def test_choice_keys_are_checked():
    with pytest.raises(BadInput, match=r"'training.epoch_sampling': 'pairs' is not one of image, caption"):
        from_dict({"training": {"epoch_sampling": "pairs"}})


def test_bad_override_syntax():
    with pytest.raises(BadInput, match=r"--set 'training.lr': expected key=value"):
        apply_overrides({}, ["training.lr"])


def test_missing_and_invalid_files_name_the_file(tmp_path):
    with pytest.raises(BadInput, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(BadInput, match=r"c.yaml: not valid YAML"):
        load_config(write(tmp_path, "name: [unclosed\n"))


def test_saved_config_round_trips(tmp_path):
    config = from_dict({"name": "r", "model": {"output_dim": 32}, "training": {"learning_rate": 5e-4}})
    save_config(config, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == config


def test_cli_exit_code_2_and_message_on_bad_config(tmp_path, capsys):
    path = write(tmp_path, "model:\n  kind: mlp\n")
    assert cli.main(["train", str(path)]) == 2
    assert "config key 'model.kind': head 'mlp' does not take it" in capsys.readouterr().err


def test_cli_unknown_command_exit_2(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'; choose one of: demo, encode" in capsys.readouterr().err
