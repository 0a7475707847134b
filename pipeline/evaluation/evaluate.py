"""Retrieval (and zero-shot) metrics of a trained head or backbone run, or of a cache's raw embeddings.

A run directory written by `xalign train` or `xalign backbone-train` holds `best.pt` (loaded without
unpickling) and its config;
`evaluate_run` embeds a split of its cache (or of another cache of the same backbones) through the
heads in fp32 (token heads read the split's tokens; a cross encoder re-ranks the top K of its own
dual features or of another run's), refusing data the run was not trained on (`pipeline.runs.provenance`);
`evaluate_cache` scores the raw embeddings of backbones that share one space. Both return metrics with their provenance.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from encoding.errors import BadInput
from encoding.runtime import resolve_device
from pipeline.config.experiment import from_dict, read_yaml_mapping
from pipeline.data.split_tensors import SplitTensors, load_splits
from pipeline.data.token_source import token_shape, token_source
from pipeline.evaluation.metrics import retrieval_metrics
from pipeline.evaluation.rerank import reranked_metrics
from pipeline.evaluation.zeroshot import ZeroShotOptions, zeroshot_metrics
from pipeline.heads import takes_tokens
from pipeline.runs import provenance
from pipeline.runs.backbone_restore import backbone_config, is_backbone_checkpoint, restored_trainer
from pipeline.training.checkpoint import load_checkpoint, load_weights
from pipeline.training.pooled_heads import build_model_and_loss
from pipeline.training.token_heads import embed_tokens, match_scorer


@dataclass(frozen=True)
class RunCheckpoint:
    """A run directory's checkpoint, read once: its path, contents and validated config; `model` (in eval mode)
    and `dims` for a head run, None for a backbone run (its trainer rebuilds the towers: `restored_trainer`)."""

    path: Path
    state: dict
    config: object
    model: torch.nn.Module | None = None
    dims: tuple | None = None

    @property
    def scores_pairs(self) -> bool:
        """A cross_encoder head run, or a backbone run with fusion layers: it re-ranks, it is not a dual run."""
        m = self.config.model
        return m.fusion is not None if self.model is None else m.scores_pairs


def open_run(run_dir: Path, checkpoint: str = "best.pt", verify: bool = True) -> RunCheckpoint:
    """The checkpoint of a run directory written by `xalign train` or `xalign backbone-train`, or BadInput.
    `verify`: check the checkpoint's recorded sha256."""
    path = Path(run_dir) / checkpoint
    if not path.is_file():
        raise BadInput(f"{path}: no checkpoint; is {run_dir} a run directory written by `xalign train`?")
    state = load_checkpoint(path, verify=verify)
    if is_backbone_checkpoint(state):
        return RunCheckpoint(path, state, backbone_config(state, path))
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("dims"), list):
        raise BadInput(f"{path}: not a head checkpoint of `xalign train` (no config or dims)")
    try:
        config = from_dict(state["config"])
    except BadInput as err:
        raise BadInput(f"{path}: its config is not valid here ({err})") from err
    model, _ = build_model_and_loss(config, *state["dims"])
    load_weights(model, state.get("model"), path)
    return RunCheckpoint(path, state, config, model.eval(), tuple(state["dims"]))


def load_run(run_dir: Path, checkpoint: str = "best.pt"):
    """(config, head pair in eval mode, (image_dim, text_dim)) of a run directory written by `xalign train`."""
    run = open_run(run_dir, checkpoint)
    if run.model is None:
        raise BadInput(f"{run.path}: not a head checkpoint of `xalign train` (a backbone run)")
    return run.config, run.model, run.dims


def run_cache(run_dir: Path, config) -> Path:
    """The run's cache: `data.cache` as given, else relative to the directory `results/` was written in."""
    given = Path(config.data.cache)
    candidates = [given] if given.is_absolute() else [given, Path(run_dir).resolve().parents[1] / given]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise BadInput(f"{Path(run_dir) / 'config.yaml'}: data.cache {given} not found; pass --cache DIR")


@dataclass(frozen=True)
class Rerank:
    """`--rerank-with DUAL_RUN --rerank-k K`: a cross-encoder run re-ranks the top K of a dual run (or, with
    no run given, of its own dual features); `k` None takes the run's `model.rerank_k`."""

    run: Path | None = None
    k: int | None = None


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
    rerank: Rerank = Rerank(),
) -> dict:
    """Metrics of a run's heads on `split` of its cache (or of `cache_dir`), with their provenance.

    Refused (`BadInput`): the run's cache changed since training, its split was re-made (unless
    `allow_new_split`), or `cache_dir` holds embeddings of other backbones.
    """
    run = open_run(run_dir, checkpoint, verify)
    config, model, dims = run.config, run.model, run.dims
    data_dir = cache_dir or run_cache(run_dir, config)
    current = provenance.describe(data_dir, config)
    trained = provenance.recorded(run_dir)
    if trained is None:
        print(f"warning: {run_dir} records no provenance (an older run); its cache and split are not checked")
    else:
        current = provenance.check_evaluation(run_dir, trained, current, cache_dir is not None, allow_new_split)
    bound = current if trained is None else trained  # the cache and split a dual run to re-rank must share
    if model is None:
        metrics = backbone_metrics(run_dir, run, data_dir, split, bound, rerank, ks, device, zeroshot, verify)
        return {"split": split, **metrics, "provenance": current}
    is_cross = run.scores_pairs
    if not is_cross and (rerank.run is not None or rerank.k is not None):
        raise BadInput(
            f"--rerank-with/--rerank-k: {run_dir} is a '{config.model.type}' run; re-ranking takes a cross_encoder run"
        )
    if zeroshot is not None and takes_tokens(config.model):
        raise BadInput(f"--zeroshot: {run_dir} is a token-head run; zero-shot classification takes pooled heads")
    target = resolve_device(device)
    data = load_splits(data_dir, [split], verify=verify)[split].to(target)
    model.to(target)
    image, text = run_embeddings(config, model, dims, data, target)
    if is_cross:
        metrics = rerank_metrics(run_dir, config, model, data, bound, rerank, (image, text), ks, verify)
        return {"split": split, **metrics, "provenance": current}
    metrics = {"split": split, **retrieval_metrics(image, text, data.caption_image_index, ks)}
    if zeroshot is not None:
        metrics["zeroshot"] = zeroshot_metrics(data_dir, data.labels, image, model.encode_text, zeroshot, target)
    return {**metrics, "provenance": current}


def run_embeddings(config, model, dims: tuple, data: SplitTensors, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) image and (M, D) caption embeddings of a split through a run's heads (pooled or token inputs)."""
    if not takes_tokens(config.model):
        if tuple(data.dims) != dims:
            raise BadInput(f"{data.cache_dir}: embedding dims {tuple(data.dims)} differ from the run's heads {dims}")
        return model.embed(data.image, data.text, config.training.eval_batch_size)
    shape = token_shape(data.cache_dir)
    if (shape.image_dim, shape.text_dim) != dims:
        raise BadInput(
            f"{data.cache_dir}: token dims {(shape.image_dim, shape.text_dim)} differ from the run's heads {dims}"
        )
    return embed_tokens(model, token_source(data, config.data.stream), data, config.training.eval_batch_size, device)


def rerank_metrics(
    run_dir, config, model, data: SplitTensors, trained: dict, rerank: Rerank, own, ks, verify: bool = True
) -> dict:
    """Metrics of a cross-encoder run re-ranking the top K of `rerank.run` (a dual run trained on the cache
    and split the cross encoder was `trained` on), or of its own dual features `own` when no run is given."""
    image, text = own
    k = config.model.rerank_k if rerank.k is None else rerank.k
    metrics = {}
    if rerank.run is not None:
        image, text, metrics["rerank_with"] = dual_embeddings(rerank.run, run_dir, trained, data, image.device, verify)
    scorer = match_scorer(model, token_source(data, config.data.stream), image.device)
    return {**reranked_metrics(image, text, data.caption_image_index, k, scorer, ks), **metrics}


def dual_embeddings(dual_run: Path, run_dir: Path, trained: dict, data: SplitTensors, device, verify=True) -> tuple:
    """(N, D) image and (M, D) caption embeddings of `data` by the dual run `dual_run` (a head or backbone run
    trained on the cache and split `run_dir` was `trained` on), and what to record of it."""
    run = open_run(dual_run, verify=verify)
    if run.scores_pairs:
        raise BadInput(f"--rerank-with {dual_run}: a run that scores pairs; give a dual-encoder run to re-rank")
    dual = provenance.recorded(dual_run)
    for key in ("cache_fingerprint", "splits_fingerprint"):
        if dual is None or dual.get(key) != trained.get(key):
            raise BadInput(
                f"--rerank-with {dual_run}: trained on another cache or split than {run_dir} "
                f"({key} {str((dual or {}).get(key))[:12]} vs {str(trained.get(key))[:12]}); both runs must "
                "share one cache and split"
            )
    if run.model is None:
        image, text = restored_trainer(run.state, run.path, run.config, data, str(device)).embed(data)
    else:
        image, text = run_embeddings(run.config, run.model.to(device), run.dims, data.to(device), device)
    return image.to(device), text.to(device), {"run": str(Path(dual_run).resolve()), "provenance": dual}


def backbone_metrics(
    run_dir, run: RunCheckpoint, data_dir, split, trained, rerank: Rerank, ks, device, zeroshot, verify
):
    """Metrics of a backbone run (its checkpoint `run`) on `split`; a run with fusion layers re-ranks the top K
    of its own dual towers, or of `rerank.run`, with its match logits."""
    fusion = run.config.model.fusion
    if fusion is None and (rerank.run is not None or rerank.k is not None):
        raise BadInput(
            f"--rerank-with/--rerank-k: {run_dir} has no fusion layers; re-ranking takes a run that scores pairs"
        )
    if zeroshot is not None:
        raise BadInput(f"--zeroshot: {run_dir} is a backbone run; zero-shot classification takes head runs")
    data = load_splits(data_dir, [split], verify=verify)[split]
    trainer = restored_trainer(run.state, run.path, run.config, data, device)
    image, text = trainer.embed(data)
    index = data.caption_image_index.to(image.device)
    if fusion is None:
        return retrieval_metrics(image, text, index, ks)
    metrics = {}
    if rerank.run is not None:
        image, text, metrics["rerank_with"] = dual_embeddings(rerank.run, run_dir, trained, data, image.device, verify)
    k = fusion.rerank_k if rerank.k is None else rerank.k
    return {**reranked_metrics(image, text, index, k, trainer.scorer(data), ks), **metrics}


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
    if config_file.is_file():  # a head or backbone run's resolved config: data.test_split is set
        test_split = read_yaml_mapping(config_file, "run config").get("data", {}).get("test_split", "test")
    if cache_dir is None:
        return "metrics.json" if split == test_split else f"metrics-{split}.json"
    return f"metrics-{Path(cache_dir).name}-{split}.json"
