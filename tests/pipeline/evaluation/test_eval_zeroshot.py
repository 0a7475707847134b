"""Zero-shot classification: hand-worked accuracies, template ensembling, templates and class names."""

import json

import numpy as np
import pytest
import torch

from encoding.errors import BadInput
from pipeline.evaluation import zeroshot
from pipeline.evaluation.zeroshot import (
    class_embeddings,
    load_class_names,
    load_templates,
    prompts_for,
    zeroshot_accuracy,
)


def test_accuracy_hand_worked_with_a_tie():
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    images = torch.tensor([[2.0, 0.1], [0.1, 3.0], [1.0, 1.0], [-1.0, -0.2]])
    labels = torch.tensor([0, 1, 0, 1])
    # image 2 ties classes 0 and 1: the tie counts against it (rank 2); image 3 ranks its class 1 second
    out = zeroshot_accuracy(images, labels, classes, ks=(1, 2))
    assert out["top1"] == pytest.approx(50.0) and out["top2"] == pytest.approx(100.0)
    assert out["mean_per_class_top1"] == pytest.approx(50.0)  # class 0: 1/2, class 1: 1/2
    assert out["num_images"] == 4 and out["num_classes"] == 3


def test_template_ensembling_is_the_renormalised_mean_of_normalised_prompts():
    prompts = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 5.0], [0.0, 2.0]])  # class 0: rows 0-1; class 1: rows 2-3
    got = class_embeddings(prompts, num_classes=2)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(got.numpy(), [[s, s], [0.0, 1.0]], atol=1e-6)
    doubled = class_embeddings(prompts, 2, encode=lambda x: 2 * x[:, [1, 0]])
    np.testing.assert_allclose(doubled.numpy(), [[s, s], [1.0, 0.0]], atol=1e-6)


def test_prompts_are_class_major():
    assert prompts_for(["cat", "dog"], ["a {}", "the {}."]) == ["a cat", "the cat.", "a dog", "the dog."]


def test_templates_by_name_kind_file_and_errors(tmp_path):
    assert load_templates("cifar100")[0] == "cifar100"
    assert load_templates(None, "demo")[0] == "demo"
    assert load_templates(None, "coco")[0] == "default"
    assert all("{}" in t for t in load_templates(None)[1])
    custom = tmp_path / "t.yaml"
    custom.write_text("mine:\n  - 'a {} here'\n  - '{}'\n")
    assert load_templates(str(custom)) == (str(custom), ["a {} here", "{}"])
    with pytest.raises(BadInput, match="not a file, nor a set of .*cifar100"):
        load_templates("nope")
    custom.write_text("- 'no placeholder'\n")
    with pytest.raises(BadInput, match="each with a \\{\\} for the class name"):
        load_templates(str(custom))


def test_class_names_from_the_data_root_or_a_file(tmp_path):
    (tmp_path / "classes.json").write_text(json.dumps(["a", "b", "c"]))
    assert load_class_names({"dataset": {"root": str(tmp_path)}}, None, 3) == ["a", "b", "c"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(["x", "y"]))
    assert load_class_names({}, other, 2) == ["x", "y"]
    with pytest.raises(BadInput, match="labels go up to 2"):
        load_class_names({}, other, 3)
    with pytest.raises(BadInput, match="pass --classes FILE"):
        load_class_names({"dataset": {"root": str(tmp_path / "missing")}}, None, 3)
    other.write_text('{"not": "a list"}')
    with pytest.raises(BadInput, match="expected a JSON list"):
        load_class_names({}, other, 1)


def test_prompts_through_the_real_minilm_backbone():
    meta = {"text_model": {"spec": "st:sentence-transformers/all-MiniLM-L6-v2"}}
    names = ["the digit one", "the digit seven"]
    _, templates = load_templates("demo")
    raw = zeroshot.embed_prompts_with_backbone(meta, prompts_for(names, templates), torch.device("cpu"))
    assert raw.shape == (2 * len(templates), 384)
    classes = class_embeddings(raw, 2)
    # the ensembled class embedding is closer to a matching caption than to the other class
    query = zeroshot.embed_prompts_with_backbone(meta, ["a large red digit seven"], torch.device("cpu"))
    scores = torch.nn.functional.normalize(query, dim=-1) @ classes.T
    assert scores[0, 1] > scores[0, 0]
