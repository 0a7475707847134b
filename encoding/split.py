"""`xalign split`: image-level, leakage-free train/val/test/tuning splits written to `splits.json`.

Every caption follows its image. Images with identical decoded pixels (duplicates under different
ids, as COCO and Flickr30k have) form one group and always land in the same split. `--tuning N`
is a random subset of N *images* of train (all their captions come with them).
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from encoding import cache
from encoding.errors import BadInput

SPLIT_NAMES = ("train", "val", "test")
PREDEFINED_ALIASES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_image_index(cache_dir: Path) -> dict[str, np.ndarray]:
    """Image ids, duplicate-group keys and dataset split names, without loading embeddings."""
    meta = cache.read_metadata(cache_dir)
    columns = defaultdict(list)
    for shard in meta["shards"]:
        with h5py.File(Path(cache_dir) / shard["file"], "r") as f:
            images = f["images"]
            columns["ids"].append(images["ids"].asstr()[()])
            for key in ("pixel_sha1", "splits"):
                if key in images:
                    columns[key].append(images[key].asstr()[()])
            columns["caption_image_ids"].append(f["captions/image_ids"].asstr()[()])
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

    A duplicate group spread over several predefined splits is moved whole to the first of
    test, val, train it touches, so no test image has a twin in train.
    """
    unknown = sorted(set(dataset_splits) - set(PREDEFINED_ALIASES))
    if unknown:
        raise BadInput(f"dataset split names {unknown} are not one of {sorted(PREDEFINED_ALIASES)}")
    names = np.array([PREDEFINED_ALIASES[s] for s in dataset_splits], dtype=object)
    for name in ("test", "val"):
        in_split = set(np.asarray(groups)[names == name])
        names[np.isin(groups, list(in_split)) & (names == "train")] = name
    return {name: [i for i, n in zip(ids, names) if n == name] for name in SPLIT_NAMES}


def verify(cache_dir: Path) -> list[str]:
    """Problems with `splits.json` (empty list when the split is leak-free)."""
    splits, index = cache.read_splits(cache_dir), read_image_index(cache_dir)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign split", description=__doc__)
    p.add_argument("cache", type=Path)
    p.add_argument("--val", type=float, default=0.1, help="fraction (< 1) or number of images")
    p.add_argument("--test", type=float, default=0.1, help="fraction (< 1) or number of images")
    p.add_argument("--tuning", type=int, default=0, help="images of train in the tuning subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predefined", action="store_true", help="use the dataset's own split")
    p.add_argument("--verify", action="store_true", help="check splits.json; exit 1 listing leaks")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.verify:
        problems = verify(args.cache)
        for problem in problems:
            print(f"LEAK: {problem}", file=sys.stderr)
        print(f"{args.cache / cache.SPLITS}: {'leak-free' if not problems else f'{len(problems)} problems'}")
        return 1 if problems else 0
    index = read_image_index(args.cache)
    groups = duplicate_groups(index)
    if args.predefined:
        if "splits" not in index:
            raise BadInput(f"{args.cache}: the dataset recorded no split of its own; drop --predefined")
        splits, method = predefined_split(index["ids"], index["splits"], groups), "predefined"
    else:
        splits, method = random_split(index["ids"], groups, args.val, args.test, args.seed), "random"
    if args.tuning > len(splits["train"]):
        raise BadInput(f"--tuning {args.tuning}: train has only {len(splits['train'])} images")
    rng = np.random.default_rng(args.seed + 1)
    tuning = sorted(rng.choice(sorted(splits["train"]), size=args.tuning, replace=False)) if args.tuning else []
    payload = {
        "seed": args.seed,
        "method": method,
        "duplicates": "pixel_sha1" if "pixel_sha1" in index else "none",
        "tuning_unit": "images",
        **{name: sorted(splits[name]) for name in SPLIT_NAMES},
        "tuning": [str(t) for t in tuning],
    }
    cache.write_splits(args.cache, payload)
    problems = verify(args.cache)
    if problems:  # cannot happen by construction; a guard for future split methods
        raise RuntimeError(f"split is not leak-free: {problems[:5]}")
    counts = ", ".join(f"{name} {len(payload[name])}" for name in (*SPLIT_NAMES, "tuning"))
    print(f"{args.cache / cache.SPLITS}: {method} split, {counts} images")
    return 0
