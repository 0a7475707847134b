"""Raw queries on an imported cache: the `--text-model`/`--image-model` name is loaded as a backbone spec when it
is one (with a warning that it matches the vectors only if it made them), else a clear error saying so."""

import pytest
import torch

from encoding.backbones import load_text_backbone
from encoding.errors import BadInput
from pipeline.runs.frozen import loaded

MINILM = "st:sentence-transformers/all-MiniLM-L6-v2"


def test_an_imported_name_that_is_no_backbone_is_named_as_imported():
    entry = {"spec": "my-own-encoder v3", "library": "import"}
    with pytest.raises(BadInput, match=r"text vectors were imported \(`xalign import --text-model 'my-own-encoder"):
        loaded(load_text_backbone, entry, "text", torch.device("cpu"))


def test_an_imported_name_that_loads_is_used_with_a_warning(caplog):
    backbone = loaded(load_text_backbone, {"spec": MINILM, "library": "import"}, "text", torch.device("cpu"))
    assert backbone.encode(["a cat"]).shape == (1, 384)
    assert "text vectors were imported; raw text queries go through" in caplog.text
