"""`open_run(RUN_DIR)`: the run object of a run directory, rebuilt from its checkpoint and config alone.

The checkpoint is read without unpickling and its recorded sha256 checked (`verify`); a head checkpoint
rebuilds its heads from the config it holds and the input dims it records, a backbone checkpoint its towers
from the architectures it stores (no pretrained download, no optimizer, no loader).
"""

from dataclasses import replace
from pathlib import Path

from encoding.backbones.image_encoder import CHECKPOINT_FORMAT
from encoding.errors import BadInput
from encoding.runtime import resolve_device, resolve_precision
from pipeline import heads
from pipeline.config import backbone as backbone_config
from pipeline.config.experiment import from_dict
from pipeline.heads import takes_tokens
from pipeline.runs.backbone_runs import BackboneRun, FusedRun, TwoTowerRun
from pipeline.runs.head_runs import CrossEncoderRun, HeadRun, TokenHeadRun
from pipeline.runs.run import Run
from pipeline.training.checkpoint import load_checkpoint, load_weights


def run_cache(run_dir: Path, config) -> Path | None:
    """The run's cache: `data.cache` as given, else relative to the directory `results/` was written in; None
    when neither exists."""
    given = Path(config.data.cache)
    candidates = [given] if given.is_absolute() else [given, Path(run_dir).resolve().parents[1] / given]
    return next((candidate for candidate in candidates if candidate.is_dir()), None)


def validated(validate, state: dict, path: Path):
    """The checkpoint's config through `validate`, or BadInput naming the file."""
    try:
        return validate(state["config"])
    except (BadInput, KeyError, TypeError) as err:
        raise BadInput(f"{path}: its config is not valid here ({err})") from err


def backbone_run(state: dict, path: Path, device, cache_dir) -> Run:
    config = validated(backbone_config.from_dict, state, path)
    config = replace(config, training=replace(config.training, device=str(device)))
    m = config.model
    kind = BackboneRun if m.text is None else TwoTowerRun if m.fusion is None else FusedRun
    run = kind.from_checkpoint(state, config, device, cache_dir, resolve_precision(config.training.precision, device))
    load_weights(run.image_encoder, state.get("encoder"), path)
    if m.text is not None:
        load_weights(run.model.text, state.get("text_encoder"), path)
    if m.fusion is not None:
        load_weights(run.model.matcher, state.get("fusion"), path)
    return run


def head_run(state: dict, path: Path, device, cache_dir) -> Run:
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("dims"), list):
        raise BadInput(f"{path}: not a checkpoint of `xalign train` or `xalign backbone-train` (no config or dims)")
    config = validated(from_dict, state, path)
    model = heads.build_from(config.model, *state["dims"])
    load_weights(model, state.get("model"), path)
    m = config.model
    kind = CrossEncoderRun if m.scores_pairs else TokenHeadRun if takes_tokens(m) else HeadRun
    run = kind(config, model, device, cache_dir)
    run.dims = tuple(state["dims"])
    return run


def open_run(
    run_dir: Path, checkpoint: str = "best.pt", device: str = "cpu", cache_dir: Path | None = None, verify: bool = True
) -> Run:
    """The run object of `run_dir/checkpoint` on `device`, in eval mode. `cache_dir` is the cache whose recorded
    backbones encode raw queries (default: the run's own `data.cache`); `verify` checks the file's sha256."""
    path = Path(run_dir) / checkpoint
    if not path.is_file():
        raise BadInput(f"{path}: no checkpoint; is {run_dir} a run directory written by `xalign train`?")
    target = resolve_device(device)
    state = load_checkpoint(path, verify=verify)
    build = backbone_run if state.get("format") == CHECKPOINT_FORMAT else head_run
    run = build(state, path, target, cache_dir)
    if run.cache_dir is None:
        run.cache_dir = run_cache(run_dir, run.config)
    run.model.to(target).eval()
    run.checkpoint = path
    return run
