"""`--format clip-retrieval`: `--root DIR` as clip-retrieval's `inference` writes it.

`DIR/img_emb/img_emb_{i}.npy`, `DIR/text_emb/text_emb_{i}.npy` and `DIR/metadata/metadata_{i}.parquet` (columns
`image_path` and `caption`), matched by the number i and read in its order; row r of the three files of one
number is one pair. The image id is `image_path`. A number missing from one of the three is `BadInput` naming
the missing file; all files of a side must share one dim.
"""

import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from encoding.errors import BadInput
from encoding.imports import IMPORTS, ImportSource, require_rows, string_column
from encoding.imports.embedding_files import RowArrays, file_row, open_npy
from encoding.imports.tables import read_table

LAYOUT = (("img_emb", "img_emb_{}.npy"), ("text_emb", "text_emb_{}.npy"), ("metadata", "metadata_{}.parquet"))


def numbered_files(root: Path) -> list[tuple[Path, Path, Path]]:
    """(images, texts, metadata) paths of each number, in numeric order."""
    if not Path(root).is_dir():
        raise BadInput(f"{root}: clip-retrieval output not found (expected a directory)")
    numbers = {}
    for folder, pattern in LAYOUT:
        regex = re.compile(re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")
        found = (regex.match(p.name) for p in (root / folder).glob("*") if (root / folder).is_dir())
        numbers[folder] = {m.group(1): root / folder / m.group(0) for m in found if m}
    every = sorted(set().union(*map(set, numbers.values())), key=int)
    if not every:
        raise BadInput(f"{root}: no img_emb/img_emb_N.npy, text_emb/text_emb_N.npy, metadata/metadata_N.parquet")
    for number in every:
        for folder, pattern in LAYOUT:
            if number not in numbers[folder]:
                others = [str(numbers[f][number]) for f, _ in LAYOUT if number in numbers[f]]
                raise BadInput(f"{root / folder / pattern.format(number)}: missing; {others[0]} has no partner")
    return [tuple(numbers[folder][number] for folder, _ in LAYOUT) for number in every]


@IMPORTS.register("clip-retrieval")
def read_clip_retrieval(root: Path) -> ImportSource:
    files = numbered_files(root)
    images, texts, tables = [], [], []
    for image_path, text_path, metadata_path in files:
        images.append(open_npy(image_path))
        texts.append(open_npy(text_path))
        tables.append(read_table(metadata_path, ("image_path", "caption")))
        rows = images[-1].shape[0]
        require_rows(text_path, "the array", texts[-1].shape[0], rows, str(image_path))
        require_rows(metadata_path, "the table", tables[-1].num_rows, rows, str(image_path))
    starts = np.cumsum([0] + [t.num_rows for t in tables])
    metadata = [m for *_, m in files]

    def locate(row: int) -> str:
        return file_row(metadata, starts, row)

    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as err:
        raise BadInput(f"{metadata[0]}: the metadata files' columns have different types ({str(err)[:200]})") from err
    paths = string_column(table.column("image_path"), metadata[0], "image_path", locate, empty=False)
    return ImportSource(
        root=Path(root).resolve(),
        inputs=[path for triple in files for path in triple],
        images=RowArrays(images, "image embeddings"),
        texts=RowArrays(texts, "text embeddings"),
        image_ids=paths,
        captions=string_column(table.column("caption"), metadata[0], "caption", locate),
        image_paths=paths,
        labels=None,
        locate=locate,
    )
