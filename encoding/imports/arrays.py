"""`--format arrays`: `--images X.npy|.safetensors --texts Y.npy|.safetensors --pairs F.csv|.parquet`.

Row i of the images, texts and pairs is one image–caption pair. The pairs table has the columns `image_id` and
`caption`, optionally `image_path` (else "") and `label` (an integer per row; it becomes the cache's
`images/labels`, so the rows of one image must agree). A `.safetensors` file must hold exactly one tensor.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from encoding.errors import BadInput
from encoding.imports import IMPORTS, ImportSource, empty_strings, require_rows, string_column
from encoding.imports.embedding_files import RowArrays, open_embeddings
from encoding.imports.tables import read_table

SUFFIXES = (".npy", ".safetensors")


def label_column(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """(N,) int64 labels; `BadInput` naming the file (and row) unless every row holds an integer."""
    if not pa.types.is_integer(column.type):
        raise BadInput(f"{path}: column 'label' is {column.type}; expected an integer per row")
    if column.null_count:
        row = int(pc.index(pc.is_null(column), True).as_py())
        raise BadInput(f"{path} row {row}: 'label' is missing; expected an integer")
    return column.to_numpy().astype(np.int64)


@IMPORTS.register("arrays")
def read_arrays(images: Path, texts: Path, pairs: Path) -> ImportSource:
    image_rows = RowArrays([open_embeddings(images, SUFFIXES)], "image embeddings")
    text_rows = RowArrays([open_embeddings(texts, SUFFIXES)], "text embeddings")
    n = image_rows.num_rows
    require_rows(texts, "the array", text_rows.num_rows, n, str(images))
    table = read_table(pairs, ("image_id", "caption"), ("image_path", "label"))
    require_rows(pairs, "the table", table.num_rows, n, str(images))
    paths = table.column("image_path") if "image_path" in table.column_names else None
    return ImportSource(
        root=Path(images).resolve().parent,
        inputs=[Path(images), Path(texts), Path(pairs)],
        images=image_rows,
        texts=text_rows,
        image_ids=string_column(table.column("image_id"), pairs, "image_id", empty=False),
        captions=string_column(table.column("caption"), pairs, "caption"),
        image_paths=empty_strings(n) if paths is None else string_column(paths, pairs, "image_path"),
        labels=label_column(table.column("label"), pairs) if "label" in table.column_names else None,
        locate=lambda row: f"{pairs} row {row}",
    )
