"""The embedded demo dataset: scenes composed from scikit-learn's bundled 8x8 digits.

Each 64x64 scene holds a big coloured digit (the image's label) and a small digit of another
colour in one of four corners, so that a caption ("a big red 3 with a small blue 7 in the top
left corner") identifies most images. Five paraphrased captions per image, COCO style.
The files are written once under `root` (`images/*.png`, `captions.jsonl`) and then read like
any folder dataset.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from encoding.atomic import write_atomic
from encoding.datasets import DATASETS, ImageRecord, read_text
from encoding.errors import BadInput
from encoding.safe_load import parse_json

SIZE = 64
DEFAULT_IMAGES = 1500
CAPTIONS = "captions.jsonl"
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (60, 90, 240),
    "yellow": (240, 220, 40),
    "magenta": (220, 50, 220),
    "cyan": (40, 220, 230),
    "white": (245, 245, 245),
    "orange": (250, 140, 20),
}
CORNERS = {"top left": (2, 2), "top right": (42, 2), "bottom left": (2, 42), "bottom right": (42, 42)}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [
    "a big {c1} {d1} with a small {c2} {d2} in the {corner} corner",
    "a large {c1} digit {w1} and a tiny {c2} {w2} at the {corner}",
    "the number {w1} drawn in {c1}, with a small {c2} number {w2} in the {corner}",
    "{c1} {d1} in the middle, small {c2} {d2} {corner}",
    "a picture of a {c1} {w1}; in the {corner} corner there is a little {c2} {w2}",
]
CLASS_NAMES = [f"the digit {w}" for w in NUMBER_WORDS]


def _glyph(pixels: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 digit (values 0..16) resized to size x size, as alpha in [0, 1]."""
    image = Image.fromarray((pixels * 255 / 16).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def _paint(canvas: np.ndarray, alpha: np.ndarray, colour, x: int, y: int) -> None:
    h, w = alpha.shape
    region = canvas[y : y + h, x : x + w]
    region[:] = region * (1 - alpha[..., None]) + np.asarray(colour, np.float32) * alpha[..., None]


def build_demo(root: Path, num_images: int = DEFAULT_IMAGES, seed: int = 0) -> None:
    """Write `num_images` scenes and their captions under `root` (skipped if already there).

    `captions.jsonl` is written last, atomically: its presence means the scenes are complete.
    """
    from sklearn.datasets import load_digits

    root = Path(root)
    if (root / CAPTIONS).is_file():
        return
    digits = load_digits()
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    colour_names, corner_names = list(COLOURS), list(CORNERS)
    rows = []
    for i in range(num_images):
        d1, d2 = rng.integers(0, 10, size=2)
        c1, c2 = rng.choice(len(colour_names), size=2, replace=False)
        corner = corner_names[rng.integers(len(corner_names))]
        canvas = np.full((SIZE, SIZE, 3), rng.uniform(0, 40), dtype=np.float32)
        big = digits.images[rng.choice(np.flatnonzero(digits.target == d1))]
        small = digits.images[rng.choice(np.flatnonzero(digits.target == d2))]
        _paint(canvas, _glyph(big, 36), COLOURS[colour_names[c1]], 14 + rng.integers(-2, 3), 14 + rng.integers(-2, 3))
        _paint(canvas, _glyph(small, 20), COLOURS[colour_names[c2]], *CORNERS[corner])
        image_id = f"demo{i:05d}"
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{image_id}.png")
        words = dict(
            c1=colour_names[c1],
            c2=colour_names[c2],
            d1=int(d1),
            d2=int(d2),
            w1=NUMBER_WORDS[d1],
            w2=NUMBER_WORDS[d2],
            corner=corner,
        )
        captions = [template.format(**words) for template in TEMPLATES]
        rows.append({"image_id": image_id, "path": f"images/{image_id}.png", "label": int(d1), "captions": captions})
    write_atomic(root / "classes.json", json.dumps(CLASS_NAMES))
    write_atomic(root / CAPTIONS, "".join(json.dumps(row) + "\n" for row in rows))


@DATASETS.register("demo")
def read_demo(
    root: Path, annotations: Path | None = None, num_images: int | None = None, seed: int = 0
) -> list[ImageRecord]:
    """The demo scenes under `root`, generated there first if missing (`num_images`, default 1500).

    A `num_images` that differs from the scenes already under `root` is `BadInput`; without it,
    whatever `root` holds is read.
    """
    build_demo(root, num_images=DEFAULT_IMAGES if num_images is None else num_images, seed=seed)
    path = root / CAPTIONS
    lines = enumerate(read_text(path).splitlines(), start=1)
    records = [_record(root, f"{path}:{n}", line) for n, line in lines if line.strip()]
    if num_images is not None and len(records) != num_images:
        raise BadInput(f"{root}: holds {len(records)} demo scenes, not num_images={num_images}; use another --root")
    return records


def _record(root: Path, where: str, line: str) -> ImageRecord:
    """One `captions.jsonl` line as written by `build_demo`; `BadInput` naming file:line when it is not."""
    try:
        row = parse_json(line, where)
    except BadInput as err:
        raise BadInput(f"{err}; delete {root} to rebuild the demo data") from err
    fields = {"image_id": str, "path": str, "captions": list, "label": int}
    if not isinstance(row, dict) or any(not isinstance(row.get(k), kind) for k, kind in fields.items()):
        raise BadInput(f"{where}: expected an object with {list(fields)} as build_demo writes them; delete {root}")
    if not all(isinstance(c, str) for c in row["captions"]):
        raise BadInput(f"{where}: 'captions' must be a list of strings; delete {root} to rebuild the demo data")
    return ImageRecord(row["image_id"], str(root / row["path"]), row["captions"], label=row["label"])
