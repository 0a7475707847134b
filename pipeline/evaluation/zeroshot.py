"""Zero-shot classification from class-name prompts with template ensembling.

For caches with `images/labels` (CIFAR-100, demo). Each class name is put into every template of a
set (`configs/zeroshot/templates.yaml`); the prompts are embedded by the cache's own text backbone
(from `metadata.json`) or looked up in a second cache that holds them as captions, then passed
through the run's text head (or used raw for a cache of a shared-space backbone pair). A class's
embedding is the renormalised mean of its normalised prompt embeddings; an image's prediction is
the class with the highest cosine score. Ties count against the image, as in retrieval.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from encoding.cache import Cache, open_cache
from encoding.errors import BadInput
from encoding.safe_load import CONFIG_BYTES, load_json, load_yaml

TEMPLATES = Path(__file__).resolve().parents[2] / "configs" / "zeroshot" / "templates.yaml"
CLASSES_FILE = "classes.json"


def load_templates(choice: str | None, dataset_kind: str = "") -> tuple[str, list[str]]:
    """(name, templates): a set of `TEMPLATES` by name, a YAML file, or the set for `dataset_kind` / `default`."""
    sets = yaml.safe_load(TEMPLATES.read_text())
    if choice is not None and Path(choice).is_file():
        values = load_yaml(choice)
        values = next(iter(values.values())) if isinstance(values, dict) and len(values) == 1 else values
        name, where = choice, choice
    else:
        name = choice or (dataset_kind if dataset_kind in sets else "default")
        if name not in sets:
            raise BadInput(f"--templates '{name}': not a file, nor a set of {TEMPLATES}: {', '.join(sets)}")
        values, where = sets[name], f"{TEMPLATES}:{name}"
    if not (isinstance(values, list) and values and all(isinstance(t, str) and "{}" in t for t in values)):
        raise BadInput(f"{where}: expected a non-empty list of templates, each with a {{}} for the class name")
    return name, values


def load_class_names(meta: dict, classes_file: Path | None, num_labels: int) -> list[str]:
    """Class names from `classes_file` (JSON list), else `classes.json` in the cache's dataset root."""
    root = (meta.get("dataset") or {}).get("root")
    path = classes_file or (Path(root) / CLASSES_FILE if root else None)
    if path is None or not Path(path).is_file():
        raise BadInput(f"zero-shot: no class names ({path} not found); pass --classes FILE with a JSON list of names")
    names = load_json(path, CONFIG_BYTES)
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise BadInput(f"{path}: expected a JSON list of class names")
    if len(names) < num_labels:
        raise BadInput(f"{path}: {len(names)} class names, but the labels go up to {num_labels - 1}")
    return names


def prompts_for(class_names: list[str], templates: list[str]) -> list[str]:
    """(C * T,) prompts, class-major: all templates of class 0, then class 1, ..."""
    return [template.format(name) for name in class_names for template in templates]


def embed_prompts_with_backbone(meta: dict, prompts: list[str], device: torch.device) -> torch.Tensor:
    """(P, D_txt) embeddings of `prompts` by the cache's text backbone and prefix, as its captions were encoded."""
    from encoding.backbones import load_text_backbone
    from encoding.encode import encode_texts

    text_model = meta["text_model"]
    try:
        backbone = load_text_backbone(text_model["spec"], device)
    except BadInput as err:
        raise BadInput(f"zero-shot: cannot load the cache's text model ({err}); pass --prompt-cache DIR") from err
    return encode_texts(prompts, backbone, text_model.get("prefix", ""), 256, device, "fp32")


def embed_prompts_from_cache(prompt_cache: Path, meta: dict, prompts: list[str]) -> torch.Tensor:
    """(P, D_txt) embeddings of `prompts` looked up by text among the captions of a second cache."""
    opened = open_cache(prompt_cache)
    other = opened.meta
    if other["text_model"]["spec"] != meta["text_model"]["spec"]:
        raise BadInput(
            f"{prompt_cache}: text model {other['text_model']['spec']!r} differs from the evaluated cache's "
            f"{meta['text_model']['spec']!r}; prompts must come from the same text backbone"
        )
    arrays = opened.arrays()
    row_of = {text: row for row, text in enumerate(arrays.caption_text)}
    missing = [p for p in prompts if p not in row_of]
    if missing:
        raise BadInput(f"{prompt_cache}: {len(missing)} prompts are not among its captions, e.g. {missing[0]!r}")
    return torch.from_numpy(np.asarray(arrays.caption_embeddings[[row_of[p] for p in prompts]], dtype=np.float32))


@torch.no_grad()
def class_embeddings(prompt_emb: torch.Tensor, num_classes: int, encode: Callable | None = None) -> torch.Tensor:
    """(C, D) ensembled class embeddings from class-major (C * T, D_txt) prompt embeddings.

    `encode` maps raw prompt embeddings into the shared space (a run's text head); None keeps them.
    """
    shared = prompt_emb if encode is None else encode(prompt_emb)
    per_class = F.normalize(shared.float(), dim=-1).reshape(num_classes, -1, shared.shape[-1])
    return F.normalize(per_class.mean(dim=1), dim=-1)


@torch.no_grad()
def zeroshot_accuracy(image_emb, labels, class_emb, ks=(1, 5)) -> dict:
    """Top-K accuracy (percent) and mean per-class top-1 of (N, D) images against (C, D) class embeddings."""
    image = F.normalize(torch.as_tensor(image_emb).float(), dim=-1)
    labels = torch.as_tensor(labels).long().to(image.device)
    scores = image @ torch.as_tensor(class_emb).float().to(image.device).T  # (N, C)
    true = scores.gather(1, labels[:, None])
    rank = (scores >= true).sum(dim=1)  # 1-based; other classes tied with the true one rank above it
    out = {f"top{k}": 100.0 * (rank <= k).double().mean().item() for k in ks}
    hits = (rank == 1).double()
    present = torch.unique(labels)
    per_class = torch.stack([hits[labels == c].mean() for c in present])
    out["mean_per_class_top1"] = 100.0 * per_class.mean().item()
    out.update(num_images=len(image), num_classes=int(scores.shape[1]))
    return out


@dataclass(frozen=True)
class ZeroShotOptions:
    """Where class names, templates and prompt embeddings come from (None: the defaults above)."""

    classes: Path | None = None
    templates: str | None = None
    prompt_cache: Path | None = None


def zeroshot_metrics(
    source: Cache | Path,
    labels,
    image_emb: torch.Tensor,
    encode_text: Callable | None,
    options: ZeroShotOptions,
    device,
) -> dict:
    """Zero-shot accuracy of (N, D) shared-space images with (N,) labels of an opened cache (or of the cache in
    directory `source`, opened unhashed); prompts through `encode_text`."""
    opened = open_cache(source, verify=False)
    cache_dir, meta = opened.dir, opened.meta
    if labels is None:
        raise BadInput(f"{cache_dir}: no images/labels; zero-shot needs a class-labelled cache (CIFAR-100, demo)")
    names = load_class_names(meta, options.classes, int(labels.max()) + 1)
    template_set, templates = load_templates(options.templates, (meta.get("dataset") or {}).get("kind", ""))
    prompts = prompts_for(names, templates)
    if options.prompt_cache is not None:
        raw = embed_prompts_from_cache(options.prompt_cache, meta, prompts)
    else:
        raw = embed_prompts_with_backbone(meta, prompts, device)
    classes = class_embeddings(raw.to(device), len(names), encode_text)
    if classes.shape[1] != image_emb.shape[1]:
        raise BadInput(
            f"{cache_dir}: prompt dim {classes.shape[1]} != image dim {image_emb.shape[1]}; raw embeddings can only "
            "be compared when both backbones share one space (evaluate a trained run instead)"
        )
    return {**zeroshot_accuracy(image_emb, labels, classes), "templates": template_set, "num_templates": len(templates)}
