"""Image-level, leakage-free train/val/test/tuning splits of a cache, written to `splits.json`.

`split_cache(DIR, ...)` is `xalign split DIR ...` as a library call; `verify(DIR)` lists leaks.
Every caption follows its image. Images with identical decoded pixels (duplicates under different
ids, as COCO and Flickr30k have) form one group and always land in the same split. The tuning
subset is N random *images* of train (all their captions come with them).
"""

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from encoding import cache, cache_checks
from encoding.cache_checks import SPLIT_NAMES
from encoding.errors import BadInput
from encoding.fingerprints import splits_fingerprint

PREDEFINED_ALIASES = {"train": "train", "restval": "train", "val": "val", "test": "test"}
log = logging.getLogger(f"xalign.{__name__}")


def read_image_index(cache_dir: Path) -> dict[str, np.ndarray]:
    """Image ids, duplicate-group keys and dataset split names, without loading embeddings.

    A missing, truncated or malformed shard is `BadInput` naming it (see `cache_checks`).
    """
    meta = cache.read_metadata(cache_dir)
    columns = defaultdict(list)
    for shard in meta["shards"]:
        path = Path(cache_dir) / shard["file"]
        with cache_checks.open_shard(path) as f:
            columns["ids"].append(cache_checks.read_column(f, path, "images/ids", strings=True))
            for key in ("pixel_sha1", "splits"):
                if f"images/{key}" in f:
                    columns[key].append(cache_checks.read_column(f, path, f"images/{key}", strings=True))
            columns["caption_image_ids"].append(cache_checks.read_column(f, path, "captions/image_ids", strings=True))
    if not columns:
        raise BadInput(f"{Path(cache_dir) / cache.METADATA}: lists no shards; nothing to split")
    for key in ("pixel_sha1", "splits"):
        if 0 < len(columns.get(key, [])) < len(meta["shards"]):
            raise BadInput(f"{cache_dir}: 'images/{key}' is in only some shards; expected all or none")
    return {key: np.concatenate(parts).astype(object) for key, parts in columns.items()}


def duplicate_groups(index: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) group key per image: its pixel hash when recorded, else its own id."""
    return index.get("pixel_sha1", index["ids"])


def _count(value: float, total: int, flag: str) -> int:
    if value < 0 or (value >= 1 and value != int(value)):
        raise BadInput(f"{flag} {value}: expected a fraction in [0, 1) or a whole number of images")
    return int(round(value * total)) if value < 1 else int(value)


def random_split(ids, groups, val: float, test: float, seed: int) -> dict:
    """Assign whole duplicate groups to test, then val, then train, in a seeded random order."""
    order = defaultdict(list)
    for image_id, group in zip(ids, groups):
        order[group].append(image_id)
    keys = sorted(order)
    np.random.default_rng(seed).shuffle(keys)
    n_test, n_val = _count(test, len(ids), "--test"), _count(val, len(ids), "--val")
    if n_test + n_val >= len(ids):
        raise BadInput(f"--val and --test take {n_val + n_test} of {len(ids)} images; nothing is left to train on")
    splits = {name: [] for name in SPLIT_NAMES}
    for key in keys:
        name = "test" if len(splits["test"]) < n_test else "val" if len(splits["val"]) < n_val else "train"
        splits[name] += order[key]
    return splits


def predefined_split(ids, dataset_splits, groups) -> dict:
    """The dataset's own split (Karpathy, COCO files, CIFAR train/test); restval counts as train.

    A duplicate group spread over several predefined splits moves whole to the highest-priority
    split any member is in (test > val > train), so no test image has a twin in val or train.
    """
    unknown = sorted(set(dataset_splits) - set(PREDEFINED_ALIASES))
    if unknown:
        raise BadInput(f"dataset split names {unknown} are not one of {sorted(PREDEFINED_ALIASES)}")
    priority = ("test", "val", "train")
    home: dict[str, str] = {}
    for group, name in zip(groups, (PREDEFINED_ALIASES[s] for s in dataset_splits)):
        if group not in home or priority.index(name) < priority.index(home[group]):
            home[group] = name
    return {name: [i for i, group in zip(ids, groups) if home[group] == name] for name in SPLIT_NAMES}


def find_leaks(splits: dict, index: dict[str, np.ndarray]) -> list[str]:
    """Problems with `splits` (a splits.json payload) over the cache `index` (empty when leak-free)."""
    problems = []
    known = set(index["ids"])
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for image_id in splits[name]:
            if image_id in seen:
                problems.append(f"image {image_id} is in both {seen[image_id]} and {name}")
            seen[image_id] = name
            if image_id not in known:
                problems.append(f"image {image_id} ({name}) is not in the cache")
    group_of = dict(zip(index["ids"], duplicate_groups(index)))
    group_splits = defaultdict(set)
    for image_id, name in seen.items():
        group_splits[group_of.get(image_id, image_id)].add(name)
    for group, names in group_splits.items():
        if len(names) > 1:
            members = sorted(i for i, g in group_of.items() if g == group)
            problems.append(f"duplicate images {members} are split across {sorted(names)}")
    outside = sorted(set(splits.get("tuning", [])) - set(splits["train"]))
    if outside:
        problems.append(f"tuning images not in train: {outside[:20]}")
    orphans = sorted(set(index["caption_image_ids"]) - known)
    if orphans:
        problems.append(f"captions point at images missing from the cache: {orphans[:20]}")
    return problems


def verify(cache_dir: Path) -> list[str]:
    """Problems with the cache's `splits.json` (empty list when the split is leak-free)."""
    return find_leaks(cache.read_splits(cache_dir), read_image_index(cache_dir))


def split_cache(
    cache_dir: Path,
    val: float = 0.1,
    test: float = 0.2,
    tuning: int = 0,
    seed: int = 0,
    predefined: bool = False,
    force: bool = False,
) -> dict:
    """Write `splits.json` (after checking it is leak-free) and return it; logs one summary line.

    `val`/`test`: a fraction (< 1) or a number of images; `tuning`: images of train in the tuning
    subset; `predefined`: the dataset's own split instead of a seeded random one. An existing
    `splits.json` is replaced only with `force`: runs trained on it would otherwise change meaning.
    """
    cache_dir = Path(cache_dir)
    old = refuse_replacing(cache_dir, force)
    index = read_image_index(cache_dir)
    groups = duplicate_groups(index)
    if predefined:
        if "splits" not in index:
            raise BadInput(f"{cache_dir}: the dataset recorded no split of its own; drop --predefined")
        splits, method = predefined_split(index["ids"], index["splits"], groups), "predefined"
    else:
        splits, method = random_split(index["ids"], groups, val, test, seed), "random"
    if tuning > len(splits["train"]):
        raise BadInput(f"--tuning {tuning}: train has only {len(splits['train'])} images")
    rng = np.random.default_rng(seed + 1)
    chosen = sorted(rng.choice(sorted(splits["train"]), size=tuning, replace=False)) if tuning else []
    payload = {
        "seed": seed,
        "method": method,
        "duplicates": "pixel_sha1" if "pixel_sha1" in index else "none",
        "tuning_unit": "images",
        **{name: sorted(splits[name]) for name in SPLIT_NAMES},
        "tuning": [str(t) for t in chosen],
    }
    problems = find_leaks(payload, index)
    if problems:  # cannot happen by construction; a guard for future split methods
        raise RuntimeError(f"{cache_dir / cache.SPLITS} not written: the split is not leak-free: {problems[:5]}")
    payload = cache.write_splits(cache_dir, payload)
    counts = ", ".join(f"{name} {len(payload[name])}" for name in (*SPLIT_NAMES, "tuning"))
    log.info(f"{cache_dir / cache.SPLITS}: {method} split, {counts} images, fingerprint {payload['fingerprint'][:12]}")
    if old is not None and old != payload["fingerprint"]:
        log.info(
            f"note: replaced the split with fingerprint {old[:12]}; runs trained on it refuse "
            "`xalign evaluate` unless --allow-new-split"
        )
    return payload


def refuse_replacing(cache_dir: Path, force: bool) -> str | None:
    """The fingerprint of the existing `splits.json` (None without one); `BadInput` unless `force`."""
    path = cache_dir / cache.SPLITS
    if not path.exists():
        return None
    if not force:
        raise BadInput(
            f"{path}: exists; replacing it would change the meaning of every run trained on it. "
            "Pass --force to replace it (those runs then refuse `xalign evaluate` unless --allow-new-split)"
        )
    try:
        return splits_fingerprint(cache.read_splits(cache_dir))
    except BadInput:  # a damaged file is what --force is for
        return None
