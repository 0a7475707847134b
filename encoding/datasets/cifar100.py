"""CIFAR-100 (`--dataset cifar100`): the python-version pickles `train`, `test` and `meta`.

`--root` is the `cifar-100-python` folder. Images stay inside the pickles and are addressed as
`cifar100://ROOT/SPLIT/INDEX`; captions come from class-name templates. With `--pairs`, each image
is paired with a partner of the same split (another class half of the time, seeded) into one 32x64
side-by-side image, `cifar100-pair://ROOT/SPLIT/LEFT+RIGHT`, whose captions name both classes;
its label is `100 * left_class + right_class`.
"""

import functools
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from encoding.datasets import DATASETS, IMAGE_SOURCES, ImageRecord, require_dir, require_file
from encoding.errors import BadInput

SPLITS = ("train", "test")
TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a close-up photo of the {}.", "a small picture of a {}.")
PAIR_TEMPLATES = (
    "a {} on the left and a {} on the right.",
    "a photo of a {} next to a {}.",
    "two pictures side by side: a {} and a {}.",
)


@functools.lru_cache(maxsize=4)
def load_pickle(path: str) -> dict:
    """A CIFAR pickle with its bytes keys decoded to str."""
    file = require_file(Path(path), "CIFAR-100 pickle")
    try:
        with open(file, "rb") as f:
            payload = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise BadInput(f"{file}: not a CIFAR-100 python pickle ({err})") from err
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in payload.items()}


def class_names(root: Path) -> list[str]:
    names = load_pickle(str(Path(root) / "meta")).get("fine_label_names")
    if names is None:
        raise BadInput(f"{Path(root) / 'meta'}: no 'fine_label_names'")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _pixels(root: str, split: str, index: int) -> np.ndarray:
    """(32, 32, 3) uint8 image `index` of `split`."""
    row = np.asarray(load_pickle(f"{root}/{split}")["data"][index], dtype=np.uint8)
    return row.reshape(3, 32, 32).transpose(1, 2, 0)


@IMAGE_SOURCES.register("cifar100")
def open_cifar(location: str) -> Image.Image:
    """'ROOT/SPLIT/INDEX' → the 32x32 RGB image."""
    root, split, index = location.rsplit("/", 2)
    return Image.fromarray(_pixels(root, split, int(index)))


@IMAGE_SOURCES.register("cifar100-pair")
def open_cifar_pair(location: str) -> Image.Image:
    """'ROOT/SPLIT/LEFT+RIGHT' → the 32x64 side-by-side RGB image."""
    root, split, pair = location.rsplit("/", 2)
    left, right = (int(i) for i in pair.split("+"))
    return Image.fromarray(np.concatenate([_pixels(root, split, left), _pixels(root, split, right)], axis=1))


def _partners(labels: np.ndarray, seed: int) -> np.ndarray:
    """(N,) partner index per image: same class or another class with probability 1/2 each, never itself."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    partners = np.empty(len(labels), dtype=np.int64)
    for i, label in enumerate(labels):
        same = by_class[label][by_class[label] != i]
        if len(same) and (rng.random() < 0.5 or len(same) == len(labels) - 1):
            partners[i] = same[rng.integers(len(same))]
            continue
        partner = i
        while labels[partner] == label:  # rejection: another class
            partner = rng.integers(len(labels))
        partners[i] = partner
    return partners


def _split_records(root: Path, split: str, names: list[str], pairs: bool, seed: int) -> list[ImageRecord]:
    payload = load_pickle(str(root / split))
    labels = np.asarray(payload.get("fine_labels", []), dtype=np.int64)
    if len(labels) != len(payload.get("data", [])):
        raise BadInput(f"{root / split}: 'data' and 'fine_labels' are missing or differ in length")
    if not pairs:
        return [
            ImageRecord(
                f"{split}-{i:05d}",
                f"cifar100://{root}/{split}/{i}",
                [t.format(names[c]) for t in TEMPLATES],
                label=int(c),
                split=split,
            )
            for i, c in enumerate(labels)
        ]
    if len(labels) < 2:
        raise BadInput(f"{root / split}: --pairs needs at least 2 images")
    partners = _partners(labels, seed + SPLITS.index(split))
    return [
        ImageRecord(
            f"{split}-{i:05d}+{j:05d}",
            f"cifar100-pair://{root}/{split}/{i}+{j}",
            [t.format(names[labels[i]], names[labels[j]]) for t in PAIR_TEMPLATES],
            label=int(100 * labels[i] + labels[j]),
            split=split,
        )
        for i, j in enumerate(partners)
    ]


@DATASETS.register("cifar100")
def read_cifar100(root: Path, annotations: Path | None = None, pairs: bool = False, seed: int = 0) -> list[ImageRecord]:
    """Every image of `train` and `test` (or one pair per image with `pairs`), labelled by fine class."""
    root = require_dir(root, "CIFAR-100 folder (--root, the 'cifar-100-python' directory)").resolve()
    for name in (*SPLITS, "meta"):
        require_file(root / name, f"CIFAR-100 '{name}' pickle")
    names = class_names(root)
    return [record for split in SPLITS for record in _split_records(root, split, names, pairs, seed)]
