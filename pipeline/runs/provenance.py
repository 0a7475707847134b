"""What produced a number, and the refusals that keep a run bound to it (DESIGN "Provenance").

When training starts, a run records `provenance.json`: its cache (path, content fingerprint, dataset,
backbone identities), its split's fingerprint and its resolved config's sha256. Every metrics file
carries the provenance of the data it was computed on, so it says alone what produced it. Resuming a
run on other data or with another config, or evaluating it on a changed cache or split, is refused
(`BadInput` naming both sides and the way out).
"""

import importlib.metadata
import json
from pathlib import Path

from encoding import cache
from encoding.atomic import write_atomic
from encoding.cache import Cache, open_cache
from encoding.errors import BadInput
from encoding.fingerprints import model_identity, sha256_json, splits_fingerprint
from encoding.runtime import library_versions
from encoding.safe_load import CONFIG_BYTES, load_json, shown
from pipeline.config.experiment import read_yaml_mapping

RECORD = "provenance.json"
EXTENDABLE = ("training.num_epochs", "training.patience")  # a resumed run may change these (extending it)


def describe(source: Cache | Path, config=None) -> dict:
    """The provenance object of numbers computed on an opened cache, or on the cache in directory `source`
    (opened unhashed), and its splits.json, with `config`."""
    opened = open_cache(source, verify=False)
    meta = opened.meta
    return {
        "cache": str(opened.dir.resolve()),
        "cache_fingerprint": opened.fingerprint,
        "splits_fingerprint": splits_fingerprint(opened.splits) if opened.has_splits else None,
        "dataset": meta.get("dataset"),
        "image_model": meta["image_model"],
        "text_model": meta["text_model"],
        "config_sha256": None if config is None else sha256_json(config.to_dict()),
        "versions": {"xalign": importlib.metadata.version("xalign"), **library_versions()},
    }


def record(run_dir: Path, provenance: dict) -> None:
    write_atomic(Path(run_dir) / RECORD, json.dumps(provenance, indent=2))


def recorded(run_dir: Path) -> dict | None:
    """The run's training-time provenance; None for a run written before runs recorded one."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return None
    payload = load_json(path, CONFIG_BYTES)
    if not isinstance(payload, dict) or not all(k in payload for k in ("cache_fingerprint", "splits_fingerprint")):
        raise BadInput(f"{path}: expected an object with cache_fingerprint and splits_fingerprint")
    return payload


def check_same_cache(run_dir: Path, trained: dict, current: dict, way_out: str) -> None:
    """Refuse numbers on a cache whose contents differ from the ones the run was trained on."""
    what = f"cache {trained.get('cache')} with fingerprint"
    check_same(
        run_dir, trained, current, "cache_fingerprint", what, current["cache"], f"(re-encoded or changed); {way_out}"
    )


def check_same_split(run_dir: Path, trained: dict, current: dict, way_out: str) -> None:
    """Refuse numbers on a split other than the one the run was trained on."""
    why = f"(re-split with --force): its test images may have been training images; {way_out}"
    where = f"{current['cache']}/{cache.SPLITS}"
    check_same(run_dir, trained, current, "splits_fingerprint", "the split with fingerprint", where, why)


def check_same(run_dir: Path, trained: dict, current: dict, key: str, what: str, where: str, why: str) -> None:
    """BadInput when the fingerprint `key` differs: `RUN/provenance.json: the run was trained on WHAT <old>; WHERE
    now has <new> WHY`."""
    if trained[key] != current[key]:
        old, new = str(trained[key])[:12], str(current[key])[:12]
        raise BadInput(f"{Path(run_dir) / RECORD}: the run was trained on {what} {old}; {where} now has {new} {why}")


def check_same_backbones(run_dir: Path, trained: dict, current: dict) -> None:
    """Refuse a cache whose image or text backbone differs from the run's (equal dims are not enough)."""
    for side in ("image_model", "text_model"):
        if model_identity(trained[side]) != model_identity(current[side]):
            raise BadInput(
                f"--cache {current['cache']}: its {side} is {_spec(current, side)}, but the run "
                f"{run_dir} was trained on {_spec(trained, side)} embeddings; use a cache of the same backbones"
            )


def _spec(provenance: dict, side: str) -> str:
    entry = provenance[side]
    return f"{entry.get('spec')} (weights {entry.get('weights')}, dim {entry.get('dim')})"


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resume(run_dir: Path, config, trained: dict, current: dict) -> None:
    """Refuse `--resume` on other data, or with a config that differs from the recorded one in any key
    but `EXTENDABLE` (`data.cache` may move: the cache is compared by content). A key the recorded config lacks
    (added to the project after the run was saved) counts as its default."""
    way_out = "train a new run (another name) instead of resuming this one"
    check_same_cache(run_dir, trained, current, way_out)
    check_same_split(run_dir, trained, current, way_out)
    config_file = Path(run_dir) / "config.yaml"
    saved = _flat(read_yaml_mapping(config_file, "run config"))
    wanted = _flat(json.loads(json.dumps(config.to_dict())))  # as YAML reads it back: tuples become lists
    defaults = _flat(json.loads(json.dumps(type(config)().to_dict())))  # a key added since the run was saved
    changed = sorted(
        key
        for key in saved.keys() | wanted.keys()
        if saved.get(key, defaults.get(key)) != wanted.get(key) and key not in EXTENDABLE and key != "data.cache"
    )
    if changed:
        details = ", ".join(f"{key}: {shown(saved.get(key))} -> {shown(wanted.get(key))}" for key in changed)
        raise BadInput(
            f"{config_file}: --resume continues the recorded run, but the config differs in {details}; "
            f"only {' and '.join(EXTENDABLE)} may change on resume: {way_out}"
        )


def check_evaluation(run_dir: Path, trained: dict, current: dict, other_cache: bool, allow_new_split: bool) -> dict:
    """The provenance of a run's metrics on `current` data, after refusing data it does not fit.

    `other_cache` (`--cache DIR`): another cache of the same backbones is fine. The run's own cache
    must be unchanged and its split the trained one, unless `allow_new_split` (then the metrics
    record the split the run was trained on next to the new one).
    """
    if other_cache and trained["cache_fingerprint"] != current["cache_fingerprint"]:
        check_same_backbones(run_dir, trained, current)
        return current
    check_same_cache(run_dir, trained, current, "retrain, or evaluate on purpose with --cache DIR")
    if trained["splits_fingerprint"] == current["splits_fingerprint"]:
        return current
    if not allow_new_split:
        check_same_split(run_dir, trained, current, "pass --allow-new-split to evaluate on the new split anyway")
    return {**current, "trained_on_splits_fingerprint": trained["splits_fingerprint"]}
