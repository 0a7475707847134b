"""Samplers, pruners and metrics of a sweep, chosen by name.

In the optuna config a sampler or pruner is a name (`sampler: tpe`) or a mapping whose other keys are
the Optuna constructor's options (`pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 3}`).
"""

import inspect
import warnings

import optuna

from encoding.errors import BadInput
from encoding.registry import Registry
from pipeline.tuning.pruning import SnapshotPruner
from pipeline.tuning.space import SearchSpace

SAMPLERS = Registry("sampler")
SAMPLERS.register("tpe")(optuna.samplers.TPESampler)
SAMPLERS.register("random")(optuna.samplers.RandomSampler)
SAMPLERS.register("grid")(optuna.samplers.GridSampler)

PRUNERS = Registry("pruner")
PRUNERS.register("median")(optuna.pruners.MedianPruner)
PRUNERS.register("hyperband")(optuna.pruners.HyperbandPruner)
PRUNERS.register("none")(optuna.pruners.NopPruner)

METRICS = Registry("metric")
METRICS.register("rsum")(lambda record: record["val_rsum"])
METRICS.register("R@1")(lambda record: (record["val_i2t_R@1"] + record["val_t2i_R@1"]) / 2)
for _direction in ("i2t", "t2i"):
    for _k in ("R@1", "R@5", "R@10"):
        METRICS.register(f"{_direction}_{_k}")(lambda record, key=f"val_{_direction}_{_k}": record[key])


def normalise_choice(raw, where: str, registry: Registry) -> dict:
    """`name` or `{type: name, **options}` → `{"type": name, **options}`, the name checked against `registry`."""
    spec = {"type": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise BadInput(
            f"{where}: expected a name or a mapping with type:; choose one of: {', '.join(registry.names())}"
        )
    registry.get(spec["type"], key=f"{where}.type")
    return dict(spec)


def _construct(registry: Registry, spec: dict, where: str, **fixed):
    constructor = registry.get(spec["type"], key=f"{where}.type")
    options = {k: v for k, v in spec.items() if k != "type"}
    valid = [name for name in inspect.signature(constructor).parameters if name not in fixed]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise BadInput(f"{where}.{unknown[0]}: not an option of {spec['type']}; valid options: {', '.join(valid)}")
    try:
        with warnings.catch_warnings():  # e.g. TPE's multivariate and group options are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return constructor(**fixed, **options)
    except (TypeError, ValueError) as err:
        raise BadInput(f"{where}: {err}") from err


SEED_STRIDE = 1_000_003  # seeds of successive study sizes differ by more than any number of workers


def sampler_seed(seed: int, worker: int, trials: int) -> int:
    """The seed of worker `worker` joining a study that holds `trials` trials.

    A sampler reseeded with the same seed would draw the same parameters again, so a rerun (after a
    kill, or with a larger --n-trials) would replay earlier trials. Each (worker, trials) pair gets its
    own seed; a fresh study's first worker keeps the configured one.
    """
    return seed + worker + SEED_STRIDE * trials


def build_sampler(
    spec: dict, space: SearchSpace, worker: int = 0, trials: int = 0, where: str = "sampler"
) -> optuna.samplers.BaseSampler:
    """The sampler of `spec` for worker `worker` on a study that already holds `trials` trials (see
    `sampler_seed`). A grid sampler keeps the configured seed in every process: the seed shuffles the
    grid, and a trial's stored grid id means the same point only under the same shuffle (the points
    already run are skipped anyway, so nothing is replayed)."""
    if spec["type"] == "grid":
        return _construct(SAMPLERS, spec, where, search_space=space.grid())
    if spec.get("seed") is not None:
        spec = {**spec, "seed": sampler_seed(spec["seed"], worker, trials)}
    return _construct(SAMPLERS, spec, where)


def build_pruner(spec: dict, where: str = "pruner") -> optuna.pruners.BasePruner:
    """The pruner of `spec`; median/percentile pruners read the study through a snapshot (see `pruning`).
    Hyperband stays as is: TPE looks for it on the study to sample per bracket."""
    pruner = _construct(PRUNERS, spec, where)
    return SnapshotPruner(pruner) if isinstance(pruner, optuna.pruners.PercentilePruner) else pruner
