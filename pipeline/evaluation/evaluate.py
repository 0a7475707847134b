"""Retrieval (and zero-shot) metrics of a trained run, or of a cache's raw embeddings.

`evaluate_run` opens a run directory written by `xalign train` or `xalign backbone-train` as a run object
(`pipeline.open_run`: the checkpoint, loaded without unpickling, and its config) and embeds a split of its
cache (or of another cache of the same backbones) through it, as training validated it; a run that scores
pairs (cross encoder, fused towers) re-ranks the top K of its own dual embeddings or of another run's. Data
the run was not trained on is refused (`pipeline.runs.provenance`). `evaluate_cache` scores the raw embeddings
of backbones that share one space. Both return metrics with their provenance.
"""

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch.nn.functional as F

from encoding.cache import Cache, open_cache
from encoding.errors import BadInput
from encoding.runtime import resolve_device
from pipeline.config.experiment import read_yaml_mapping
from pipeline.data.split_tensors import SplitTensors, load_splits
from pipeline.data.token_source import token_shape
from pipeline.evaluation.metrics import retrieval_metrics
from pipeline.evaluation.rerank import reranked_metrics
from pipeline.evaluation.zeroshot import ZeroShotOptions, zeroshot_metrics
from pipeline.runs import provenance
from pipeline.runs.restore import open_run
from pipeline.runs.run import Run

log = logging.getLogger(f"xalign.{__name__}")


@dataclass(frozen=True)
class Rerank:
    """`--rerank-with DUAL_RUN --rerank-k K`: a run that scores pairs re-ranks the top K of a dual run (or, with
    no run given, of its own dual embeddings); `k` None takes the run's own `rerank_k`."""

    run: Path | None = None
    k: int | None = None


@dataclass(frozen=True)
class RunOnSplit:
    """A run opened on a split of its cache (or of another cache of its backbones): what `evaluate`, `index` and
    `search` embed. `provenance` describes the data now; `trained` is what the run recorded (None: an older run)."""

    run: Run
    split: str
    cache: Cache
    provenance: dict
    trained: dict | None

    @cached_property
    def data(self) -> SplitTensors:
        """The split's tensors, read on first use and checked against the run's input dims."""
        data = load_splits(self.cache, [self.split])[self.split]
        check_dims(self.run, data)
        return data


def run_on_split(
    run_dir: Path,
    split: str = "test",
    cache_dir: Path | None = None,
    device: str = "cpu",
    checkpoint: str = "best.pt",
    allow_new_split: bool = False,
    verify: bool = True,
) -> RunOnSplit:
    """The run of `run_dir` and `split` of its cache (or of `cache_dir`), checked to belong together.

    Refused (`BadInput`): the run's cache changed since training, its split was re-made (unless
    `allow_new_split`) or `cache_dir` holds embeddings of other backbones; the split's tensors are read when
    first used (`data`), refused when their dims differ from the run's.
    """
    run = open_run(run_dir, checkpoint, device, cache_dir, verify)
    data_dir = cache_dir or run.cache_dir
    if data_dir is None:
        raise BadInput(
            f"{Path(run_dir) / 'config.yaml'}: data.cache {run.config.data.cache} not found; pass --cache DIR"
        )
    opened = open_cache(data_dir, verify)
    current = provenance.describe(opened, run.config)
    trained = provenance.recorded(run_dir)
    if trained is None:
        log.warning(f"{run_dir} records no provenance (an older run); its cache and split are not checked")
    else:
        current = provenance.check_evaluation(run_dir, trained, current, cache_dir is not None, allow_new_split)
    return RunOnSplit(run, split, opened, current, trained)


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
    """Metrics of a run on `split` of its cache (or of `cache_dir`), with their provenance; refused as
    `run_on_split` refuses, and for options the run does not take."""
    opened = run_on_split(run_dir, split, cache_dir, device, checkpoint, allow_new_split, verify)
    run, data, current = opened.run, opened.data, opened.provenance
    bound = current if opened.trained is None else opened.trained  # the cache and split a re-rank run must share
    check_options(run, run_dir, rerank, zeroshot)
    image, text, index = run.embed_split(data)
    if run.scores_pairs:
        metrics = rerank_metrics(run, run_dir, data, bound, rerank, (image, text, index), ks, verify)
    else:
        metrics = retrieval_metrics(image, text, index, ks)
    if zeroshot is not None:
        encode = run.model.encode_text
        metrics["zeroshot"] = zeroshot_metrics(opened.cache, data.labels, image, encode, zeroshot, run.device)
    return {"split": split, **metrics, "provenance": current}


def check_options(run: Run, run_dir: Path, rerank: Rerank, zeroshot: ZeroShotOptions | None) -> None:
    """BadInput for re-ranking options on a run that does not score pairs, and zero-shot on a run without pooled
    heads over the cache's text embeddings."""
    if not run.scores_pairs and (rerank.run is not None or rerank.k is not None):
        what = f"is a '{run.config.model.type}'" if run.dims else "has no fusion layers; re-ranking takes a fused"
        takes = "; re-ranking takes a cross_encoder" if run.dims else ""
        raise BadInput(f"--rerank-with/--rerank-k: {run_dir} {what}{takes} run")
    if zeroshot is not None and run.kind != "head":
        what = "a token-head" if run.dims else "a backbone"
        raise BadInput(f"--zeroshot: {run_dir} is {what} run; zero-shot classification takes pooled-head runs")


def check_dims(run: Run, data: SplitTensors) -> None:
    """BadInput when a head run's input dims differ from the split's (pooled vectors or tokens)."""
    if run.dims is None:
        return
    if run.kind == "head":
        dims, what = tuple(data.dims), "embedding"
    else:
        shape = token_shape(data.cache or data.cache_dir)
        dims, what = (shape.image_dim, shape.text_dim), "token"
    if dims != run.dims:
        raise BadInput(f"{data.cache_dir}: {what} dims {dims} differ from the run's heads {run.dims}")


def rerank_metrics(run: Run, run_dir, data: SplitTensors, trained: dict, rerank: Rerank, own, ks, verify) -> dict:
    """Metrics of a run that scores pairs re-ranking the top K of `rerank.run` (a dual run trained on the cache
    and split `run` was `trained` on), or of its own dual embeddings `own` when no run is given."""
    image, text, index = own
    k = run.rerank_k if rerank.k is None else rerank.k
    scorer = run.pair_scorer(data)
    metrics = {}
    if rerank.run is not None:
        image, text, metrics["rerank_with"] = dual_embeddings(rerank.run, run_dir, trained, data, run.device, verify)
    return {**reranked_metrics(image, text, index, k, scorer, ks), **metrics}


def dual_embeddings(dual_run: Path, run_dir: Path, trained: dict, data: SplitTensors, device, verify=True) -> tuple:
    """(N, D) image and (M, D) caption embeddings of `data` by the dual run `dual_run` (a head or backbone run
    trained on the cache and split `run_dir` was `trained` on), and what to record of it."""
    run = open_run(dual_run, device=str(device), verify=verify)
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
    check_dims(run, data)
    image, text, _ = run.embed_split(data)
    return image.to(device), text.to(device), {"run": str(Path(dual_run).resolve()), "provenance": dual}


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
    opened = open_cache(cache_dir, verify)
    data = load_splits(opened, [split])[split].to(target)
    if data.image.shape[1] != data.text.shape[1]:
        raise BadInput(
            f"{cache_dir}: image dim {data.image.shape[1]} != text dim {data.text.shape[1]}; raw embeddings "
            "can only be compared when both backbones share one space (e.g. a CLIP or SigLIP cache)"
        )
    image, text = F.normalize(data.image, dim=-1), F.normalize(data.text, dim=-1)
    metrics = {"split": split, **retrieval_metrics(image, text, data.caption_image_index, ks)}
    if zeroshot is not None:
        metrics["zeroshot"] = zeroshot_metrics(opened, data.labels, image, None, zeroshot, target)
    return {**metrics, "provenance": provenance.describe(opened)}


def default_run_output(run_dir: Path, split: str, cache_dir: Path | None) -> str:
    """`metrics.json` for the run's own test split (what `xalign train` wrote), else a name that says what it is."""
    config_file = Path(run_dir) / "config.yaml"
    test_split = "test"
    if config_file.is_file():  # a head or backbone run's resolved config: data.test_split is set
        test_split = read_yaml_mapping(config_file, "run config").get("data", {}).get("test_split", "test")
    if cache_dir is None:
        return "metrics.json" if split == test_split else f"metrics-{split}.json"
    return f"metrics-{Path(cache_dir).name}-{split}.json"
