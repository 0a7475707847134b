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


def _latin1(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocols 0-2, and nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not how bytes are pickled")
    return text.encode("latin1")


_NUMPY_ARRAYS = {  # what pickled arrays name: reconstructors (numpy 1.x `numpy.core`, 2.x `numpy._core`), types
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class CifarUnpickler(pickle.Unpickler):
    """Loads only dicts, lists, bytes, str, numbers and numpy arrays: every other global is refused, so a
    crafted pickle cannot run code (plain `pickle.load` calls whatever callable the file names)."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if (module, name) in _NUMPY_ARRAYS:
            return super().find_class(module, name)
        raise BadInput(
            f"{self.path}: refuses to load global {module}.{name}; a CIFAR-100 python pickle holds only "
            "dicts, lists, bytes, str, int and numpy arrays"
        )


def _version(path: Path) -> tuple[str, int, int]:
    """(path, mtime, size) of an existing file: a cache key that changes when the file does."""
    stat = require_file(path, "CIFAR-100 pickle").stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def load_pickle(path: str) -> dict:
    """A CIFAR pickle with its bytes keys decoded to str, unpickled by `CifarUnpickler` (no code runs)."""
    return _load_pickle(*_version(Path(path)))


@functools.lru_cache(maxsize=4)
def _load_pickle(path: str, mtime_ns: int, size: int) -> dict:
    file = Path(path)
    try:
        with open(file, "rb") as f:
            payload = CifarUnpickler(f, file).load()
    except BadInput:
        raise
    except Exception as err:  # any failure of the restricted unpickler: not a CIFAR pickle
        raise BadInput(f"{file}: not a CIFAR-100 python pickle ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict):
        raise BadInput(f"{file}: holds {type(payload).__name__}, expected the dict of a CIFAR-100 python pickle")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in payload.items()}


def class_names(root: Path) -> list[str]:
    """The 100 fine class names of the `meta` pickle."""
    names = load_pickle(str(Path(root) / "meta")).get("fine_label_names")
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise BadInput(f"{Path(root) / 'meta'}: 'fine_label_names' missing or not a list of names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _split_arrays(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """((N, 3072) uint8 pixel rows, (N,) int64 fine labels) of the `split` pickle, checked."""
    return _checked_split(*_version(Path(root) / split))


@functools.lru_cache(maxsize=4)
def _checked_split(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    file, payload = Path(path), _load_pickle(path, mtime_ns, size)
    data, labels = payload.get("data"), payload.get("fine_labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise BadInput(f"{file}: 'data' is {found}, expected (N, 3072) uint8 pixel rows")
    if not isinstance(labels, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in labels):
        raise BadInput(f"{file}: 'fine_labels' missing or not a list of integers")
    if len(labels) != len(data):
        raise BadInput(f"{file}: 'data' has {len(data)} rows but 'fine_labels' has {len(labels)}")
    return data, np.asarray(labels, dtype=np.int64)


def _pixels(root: str, split: str, index: int) -> np.ndarray:
    """(32, 32, 3) uint8 image `index` of `split`."""
    data = _split_arrays(Path(root), split)[0]
    if not 0 <= index < len(data):
        raise BadInput(f"{root}/{split}: no image {index}; it holds {len(data)}")
    return data[index].reshape(3, 32, 32).transpose(1, 2, 0)


def _location(location: str) -> tuple[str, str, str]:
    """'ROOT/SPLIT/ITEM' → (ROOT, SPLIT, ITEM)."""
    parts = location.rsplit("/", 2)
    if len(parts) != 3 or parts[1] not in SPLITS:
        raise BadInput(f"image location {location!r}: expected ROOT/SPLIT/INDEX with SPLIT one of {list(SPLITS)}")
    return parts[0], parts[1], parts[2]


def _index(location: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise BadInput(f"{location}: image index {text!r} is not a non-negative integer")
    return int(text)


@IMAGE_SOURCES.register("cifar100")
def open_cifar(location: str) -> Image.Image:
    """'ROOT/SPLIT/INDEX' → the 32x32 RGB image."""
    root, split, index = _location(location)
    return Image.fromarray(_pixels(root, split, _index(location, index)))


@IMAGE_SOURCES.register("cifar100-pair")
def open_cifar_pair(location: str) -> Image.Image:
    """'ROOT/SPLIT/LEFT+RIGHT' → the 32x64 side-by-side RGB image."""
    root, split, pair = _location(location)
    left, _, right = pair.partition("+")
    left, right = _index(location, left), _index(location, right)
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
    labels = _split_arrays(root, split)[1]
    outside = labels[(labels < 0) | (labels >= len(names))]
    if len(outside):
        raise BadInput(f"{root / split}: fine label {outside[0]} is not a class of 'meta' (0..{len(names) - 1})")
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
