"""The one registry mechanism: registration, lookup, and errors listing the registered names."""

import pytest

from encoding.backbones import IMAGE_BACKBONES, TEXT_BACKBONES, split_spec
from encoding.datasets import DATASETS
from encoding.errors import BadInput
from encoding.registry import Registry
from pipeline.heads import HEADS
from pipeline.losses import LOSSES


def test_register_and_get():
    things = Registry("thing")

    @things.register("a")
    def make_a():
        return "A"

    assert things.get("a")() == "A"
    assert "a" in things and things.names() == ["a"]


def test_unknown_name_lists_choices_and_key():
    things = Registry("thing")
    things.register("b")(object)
    things.register("a")(object)
    with pytest.raises(BadInput, match=r"--thing: unknown thing 'c'; choose one of: a, b"):
        things.get("c", key="--thing")


def test_duplicate_registration_is_refused():
    things = Registry("thing")
    things.register("a")(object)
    with pytest.raises(ValueError, match="registered twice"):
        things.register("a")(object)


def test_project_registries_hold_the_skeleton_entries():
    assert {"mlp", "linear"} <= set(HEADS.names())
    assert "clip" in LOSSES.names()
    assert "demo" in DATASETS.names()
    assert "timm" in IMAGE_BACKBONES.names() and "st" in TEXT_BACKBONES.names()


def test_model_spec_errors_name_the_valid_prefixes():
    assert split_spec("st:intfloat/e5-large-v2") == ("st", "intfloat/e5-large-v2")
    with pytest.raises(BadInput, match=r"model spec 'nope:thing': expected PREFIX:NAME with PREFIX one of"):
        split_spec("nope:thing")
