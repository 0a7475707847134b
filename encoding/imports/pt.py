"""`--format pt`, the seed pipeline's layout: `--images F.pt --texts F.pt --metadata F.json`.

Each `.pt` holds an (N, D) float tensor, or a dict with exactly one 2-D tensor value (`{"embeddings": T}`),
one row per image–caption pair (`embedding_files.open_pt`: `torch.load(weights_only=True)`). The JSON object
(read bounded, `safe_load.load_json`) holds `image_ids`, one per row (strings or integers, stored as text), and
optionally `captions` and `image_paths`, one per row. Without `captions` every caption is stored as "" (the
vectors are all that training and evaluation use), with a warning.
"""

import logging
from pathlib import Path

from encoding.errors import BadInput
from encoding.imports import IMPORTS, ImportSource, empty_strings, require_rows, string_column
from encoding.imports.embedding_files import RowArrays, open_embeddings
from encoding.safe_load import load_json

log = logging.getLogger(f"xalign.{__name__}")


def _id_list(path: Path, key: str, values, rows: int, source: Path) -> list:
    """The JSON list `key`, checked: one entry per row, each a string or an integer."""
    if not isinstance(values, list):
        raise BadInput(f"{path}: key '{key}' is {type(values).__name__}, expected a list with one entry per row")
    require_rows(path, f"'{key}'", len(values), rows, source)
    allowed = (str, int) if key == "image_ids" else (str,)
    bad = next((i for i, v in enumerate(values) if not isinstance(v, allowed) or isinstance(v, bool)), None)
    if bad is not None:
        kinds = "a string or an integer" if key == "image_ids" else "a string"
        raise BadInput(f"{path}: key '{key}' entry {bad} is {type(values[bad]).__name__}, expected {kinds}")
    return [str(v) for v in values] if key == "image_ids" else values


@IMPORTS.register("pt")
def read_pt(images: Path, texts: Path, metadata: Path) -> ImportSource:
    image_rows = RowArrays([open_embeddings(images, (".pt",))], "image embeddings")
    text_rows = RowArrays([open_embeddings(texts, (".pt",))], "text embeddings")
    n = image_rows.num_rows
    require_rows(texts, "the tensor", text_rows.num_rows, n, str(images))
    meta = load_json(metadata)
    if not isinstance(meta, dict) or "image_ids" not in meta:
        raise BadInput(f"{metadata}: key 'image_ids' missing; expected an object with one image id per row")
    columns = {
        key: _id_list(metadata, key, meta[key], n, images)
        for key in ("image_ids", "captions", "image_paths")
        if key in meta
    }

    def column(key: str):
        return (
            string_column(columns[key], metadata, key, empty=key != "image_ids") if key in columns else empty_strings(n)
        )

    if "captions" not in columns:
        log.warning(f"{metadata}: no 'captions'; every caption is stored as an empty string")
    return ImportSource(
        root=Path(images).resolve().parent,
        inputs=[Path(images), Path(texts), Path(metadata)],
        images=image_rows,
        texts=text_rows,
        image_ids=column("image_ids"),
        captions=column("captions"),
        image_paths=column("image_paths"),
        labels=None,
        locate=lambda row: f"{metadata} row {row}",
    )
