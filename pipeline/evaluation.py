"""Retrieval (and zero-shot) metrics of a trained head run, or of a cache's raw embeddings.

A run directory written by `xalign train` holds `best.pt` (loaded without unpickling) and its config;
`evaluate_run` embeds a split of its cache (or of another cache of the same backbones) through the
heads in fp32, refusing data the run was not trained on (`pipeline.provenance`); `evaluate_cache`
scores the raw embeddings of backbones that share one space. Both return metrics with their provenance.
"""

from pathlib import Path

import torch.nn.functional as F

from encoding.errors import BadInput
from encoding.runtime import resolve_device
from pipeline import provenance
from pipeline.config import from_dict, read_yaml_mapping
from pipeline.data import load_splits
from pipeline.metrics import retrieval_metrics
from pipeline.training.checkpoint import load_checkpoint, load_weights
from pipeline.training.heads import build_model_and_loss
from pipeline.zeroshot import ZeroShotOptions, zeroshot_metrics


def load_run(run_dir: Path, checkpoint: str = "best.pt"):
    """(config, head pair in eval mode, (image_dim, text_dim)) of a run directory written by `xalign train`."""
    path = Path(run_dir) / checkpoint
    if not path.is_file():
        raise BadInput(f"{path}: no checkpoint; is {run_dir} a run directory written by `xalign train`?")
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("dims"), list):
        raise BadInput(f"{path}: not a head checkpoint of `xalign train` (no config or dims)")
    try:
        config = from_dict(state["config"])
    except BadInput as err:
        raise BadInput(f"{path}: its config is not valid here ({err})") from err
    model, _ = build_model_and_loss(config, *state["dims"])
    load_weights(model, state.get("model"), path)
    return config, model.eval(), tuple(state["dims"])


def run_cache(run_dir: Path, config) -> Path:
    """The run's cache: `data.cache` as given, else relative to the directory `results/` was written in."""
    given = Path(config.data.cache)
    candidates = [given] if given.is_absolute() else [given, Path(run_dir).resolve().parents[1] / given]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise BadInput(f"{Path(run_dir) / 'config.yaml'}: data.cache {given} not found; pass --cache DIR")


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    ks=(1, 5, 10),
    cache_dir: Path | None = None,
    device: str = "cpu",
    zeroshot: ZeroShotOptions | None = None,
    checkpoint: str = "best.pt",
    allow_new_split: bool = False,
    verify: bool = True,
) -> dict:
    """Metrics of a run's heads on `split` of its cache (or of `cache_dir`), with their provenance.

    Refused (`BadInput`): the run's cache changed since training, its split was re-made (unless
    `allow_new_split`), or `cache_dir` holds embeddings of other backbones.
    """
    config, model, dims = load_run(run_dir, checkpoint)
    data_dir = cache_dir or run_cache(run_dir, config)
    current = provenance.describe(data_dir, config)
    trained = provenance.recorded(run_dir)
    if trained is None:
        print(f"warning: {run_dir} records no provenance (an older run); its cache and split are not checked")
    else:
        current = provenance.check_evaluation(run_dir, trained, current, cache_dir is not None, allow_new_split)
    target = resolve_device(device)
    data = load_splits(data_dir, [split], verify=verify)[split].to(target)
    model.to(target)
    if tuple(data.dims) != dims:
        raise BadInput(f"{data_dir}: embedding dims {tuple(data.dims)} differ from the run's heads {dims}")
    image, text = model.embed(data.image, data.text, config.training.eval_batch_size)
    metrics = {"split": split, **retrieval_metrics(image, text, data.caption_image_index, ks)}
    if zeroshot is not None:
        metrics["zeroshot"] = zeroshot_metrics(data_dir, data.labels, image, model.encode_text, zeroshot, target)
    return {**metrics, "provenance": current}


def evaluate_cache(
    cache_dir: Path,
    split: str = "test",
    ks=(1, 5, 10),
    device: str = "cpu",
    zeroshot: ZeroShotOptions | None = None,
    verify: bool = True,
) -> dict:
    """Metrics of a cache's raw, L2-normalised embeddings on `split` (image and text dims must be equal)."""
    target = resolve_device(device)
    data = load_splits(cache_dir, [split], verify=verify)[split].to(target)
    if data.image.shape[1] != data.text.shape[1]:
        raise BadInput(
            f"{cache_dir}: image dim {data.image.shape[1]} != text dim {data.text.shape[1]}; raw embeddings "
            "can only be compared when both backbones share one space (e.g. a CLIP or SigLIP cache)"
        )
    image, text = F.normalize(data.image, dim=-1), F.normalize(data.text, dim=-1)
    metrics = {"split": split, **retrieval_metrics(image, text, data.caption_image_index, ks)}
    if zeroshot is not None:
        metrics["zeroshot"] = zeroshot_metrics(cache_dir, data.labels, image, None, zeroshot, target)
    return {**metrics, "provenance": provenance.describe(cache_dir)}


def default_run_output(run_dir: Path, split: str, cache_dir: Path | None) -> str:
    """`metrics.json` for the run's own test split (what `xalign train` wrote), else a name that says what it is."""
    config_file = Path(run_dir) / "config.yaml"
    test_split = "test"
    if config_file.is_file():
        test_split = from_dict(read_yaml_mapping(config_file, "run config")).data.test_split
    if cache_dir is None:
        return "metrics.json" if split == test_split else f"metrics-{split}.json"
    return f"metrics-{Path(cache_dir).name}-{split}.json"
