"""`xalign import` refuses each bad input with exit 2 and a message naming the file (and row or key), and leaves
no complete cache behind."""

import json
import os
import pickle
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import save_file

from encoding import cache
from encoding.errors import BadInput
from encoding.imports.writer import ImportRequest, import_cache
from pipeline import cli

N, DIM = 12, 8


def vectors(rows: int = N, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


def ids(rows: int = N) -> list[str]:
    return [f"im{r // 2}" for r in range(rows)]  # two captions per image


def arrays_input(tmp_path, images=None, texts=None, table=None) -> dict:
    """An arrays input (same image vector for both rows of an image), with any part replaced."""
    images = np.repeat(vectors(N // 2), 2, axis=0) if images is None else images
    np.save(tmp_path / "img.npy", images)
    np.save(tmp_path / "txt.npy", vectors(seed=1) if texts is None else texts)
    pq.write_table(
        pa.table({"image_id": ids(), "caption": ["c"] * N}) if table is None else table, tmp_path / "pairs.parquet"
    )
    return {"images": tmp_path / "img.npy", "texts": tmp_path / "txt.npy", "pairs": tmp_path / "pairs.parquet"}


def pt_input(tmp_path, images=None, metadata=None) -> dict:
    if images is None:
        torch.save(torch.from_numpy(np.repeat(vectors(N // 2), 2, axis=0)), tmp_path / "img.pt")
    torch.save(torch.from_numpy(vectors(seed=1)), tmp_path / "txt.pt")
    (tmp_path / "meta.json").write_text(json.dumps({"image_ids": ids()} if metadata is None else metadata))
    return {"images": tmp_path / "img.pt", "texts": tmp_path / "txt.pt", "metadata": tmp_path / "meta.json"}


def refused(tmp_path, capsys, kind: str, files: dict, match: str) -> str:
    """Run the import through the CLI: exit 2, `error: ...` matching `match`, no complete cache."""
    argv = ["import", "--format", kind, *(f"--{k}={v}" for k, v in files.items())]
    argv += ["--image-model", "m:i", "--text-model", "m:t", "--out", str(tmp_path / "cache"), "--shard-size", "2"]
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # a refusal may leave an incomplete cache
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ")
    assert re.search(match, err), err
    metadata = tmp_path / "cache" / cache.METADATA
    assert not metadata.exists() or not json.loads(metadata.read_text())["complete"]
    return err


class Boom:
    """Unpickling it would create a file (via os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pt_holding_a_pickled_object_is_refused_without_running_it(tmp_path, capsys, writer):
    marker = tmp_path / "ran"
    files = pt_input(tmp_path, images=False)
    if writer == "pickle":
        with open(files["images"], "wb") as f:
            pickle.dump({"embeddings": Boom(marker)}, f)
    else:
        torch.save({"embeddings": Boom(marker)}, files["images"])
    refused(
        tmp_path, capsys, "pt", files, r"img\.pt: refused without running it: not plain data .* but a pickled object"
    )
    assert not marker.exists()


def test_a_pt_holding_something_other_than_plain_data_or_two_tensors_is_refused(tmp_path, capsys):
    files = pt_input(tmp_path, images=False)
    torch.save({"embeddings": torch.zeros(N, DIM), "dtype": torch.float32}, files["images"])
    refused(tmp_path, capsys, "pt", files, r"img\.pt: holds a dtype; expected only tensors, lists, dicts")
    torch.save({"a": torch.zeros(N, DIM), "b": torch.zeros(N, DIM)}, files["images"])
    refused(tmp_path, capsys, "pt", files, r"img\.pt: a dict with 2 2-D tensors \['a', 'b'\]")
    torch.save(torch.zeros(N, DIM, dtype=torch.int64), files["images"])
    refused(tmp_path, capsys, "pt", files, r"img\.pt: embeddings are torch.int64 of shape \(12, 8\); expected a 2-D")


def test_row_counts_that_disagree_are_refused(tmp_path, capsys):
    files = pt_input(tmp_path, metadata={"image_ids": ids(N - 1)})
    refused(tmp_path, capsys, "pt", files, r"meta\.json: 'image_ids' has 11 rows, but .*img\.pt has 12")
    files = pt_input(tmp_path, metadata={"image_ids": ids(), "captions": ["c"] * (N + 1)})
    refused(tmp_path, capsys, "pt", files, r"meta\.json: 'captions' has 13 rows")
    files = pt_input(tmp_path, metadata={"captions": ["c"] * N})
    refused(tmp_path, capsys, "pt", files, r"meta\.json: key 'image_ids' missing")
    files = pt_input(tmp_path, metadata={"image_ids": [*ids(N - 1), 1.5]})
    refused(tmp_path, capsys, "pt", files, r"meta\.json: key 'image_ids' entry 11 is float")
    files = arrays_input(tmp_path, texts=vectors(N + 2))
    refused(tmp_path, capsys, "arrays", files, r"txt\.npy: the array has 14 rows, but .*img\.npy has 12")
    files = arrays_input(tmp_path, table=pa.table({"image_id": ids(N - 2), "caption": ["c"] * (N - 2)}))
    refused(tmp_path, capsys, "arrays", files, r"pairs\.parquet: the table has 10 rows")


def test_a_table_without_the_needed_columns_is_refused(tmp_path, capsys):
    files = arrays_input(tmp_path, table=pa.table({"image_id": ids(), "text": ["c"] * N}))
    refused(
        tmp_path, capsys, "arrays", files, r"pairs\.parquet: column 'caption' missing; .*found \['image_id', 'text'\]"
    )
    (tmp_path / "pairs.csv").write_text("id,caption\n" + "a,b\n" * N)
    refused(tmp_path, capsys, "arrays", {**files, "pairs": tmp_path / "pairs.csv"}, r"pairs\.csv: column 'image_id'")
    files = arrays_input(tmp_path, table=pa.table({"image_id": ids(), "caption": ["c"] * (N - 1) + [None]}))
    refused(tmp_path, capsys, "arrays", files, r"pairs\.parquet row 11: 'caption' is missing")
    files = arrays_input(tmp_path, table=pa.table({"image_id": ids()[:-1] + [""], "caption": ["c"] * N}))
    refused(tmp_path, capsys, "arrays", files, r"pairs\.parquet row 11: 'image_id' is empty; expected a nonempty")
    files = arrays_input(tmp_path, table=pa.table({"image_id": [0.5] * N, "caption": ["c"] * N}))
    refused(tmp_path, capsys, "arrays", files, r"pairs\.parquet: column 'image_id' is double; expected strings")
    files = arrays_input(tmp_path, table=pa.table({"image_id": ids(), "caption": ["c"] * 3 + ["a\x00b"] + ["c"] * 8}))
    refused(tmp_path, capsys, "arrays", files, r"pairs\.parquet row 3: 'caption' holds a NUL character")
    files = arrays_input(tmp_path, table=pa.table({"image_id": ids(), "caption": ["c"] * N, "label": [0.5] * N}))
    refused(tmp_path, capsys, "arrays", files, r"pairs\.parquet: column 'label' is double; expected an integer")


def test_nan_inf_and_zero_rows_are_refused_naming_the_row(tmp_path, capsys):
    for value, problem in ((np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (0.0, "a zero vector")):
        texts = vectors(seed=1)
        texts[7] = value
        files = arrays_input(tmp_path, texts=texts)
        refused(tmp_path, capsys, "arrays", files, rf"txt\.npy row 7: the text embedding is {problem}")


def test_embeddings_that_are_not_2d_floats_are_refused(tmp_path, capsys):
    files = arrays_input(tmp_path, images=np.arange(N * DIM).reshape(N, DIM))
    refused(
        tmp_path, capsys, "arrays", files, r"img\.npy: embeddings are int64 of shape \(12, 8\); expected a 2-D float"
    )
    files = arrays_input(tmp_path, images=vectors()[:, :, None])
    refused(tmp_path, capsys, "arrays", files, r"img\.npy: embeddings are float32 of shape \(12, 8, 1\)")
    np.save(tmp_path / "img.npy", np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    refused(tmp_path, capsys, "arrays", files, r"img\.npy: not a readable \.npy array of numbers")
    save_file({"a": vectors(), "b": vectors()}, tmp_path / "img.safetensors")
    files = {**files, "images": tmp_path / "img.safetensors"}
    refused(tmp_path, capsys, "arrays", files, r"img\.safetensors: holds 2 tensors \['a', 'b'\]; expected exactly one")
    refused(
        tmp_path, capsys, "arrays", {**files, "images": tmp_path / "img.bin"}, r"img\.bin: embeddings file not found"
    )


def test_rows_of_one_image_with_different_image_embeddings_are_refused(tmp_path, capsys):
    images = np.repeat(vectors(N // 2), 2, axis=0)
    images[9] += 0.05
    files = arrays_input(tmp_path, images=images)
    refused(
        tmp_path,
        capsys,
        "arrays",
        files,
        r"pairs\.parquet row 9: image 'im4' has an image embedding differing "
        r"from its row 8 \(.*img\.npy row 8\)",
    )
    table = pa.table({"image_id": ids(), "caption": ["c"] * N, "label": [0] * (N - 1) + [1]})
    files = arrays_input(tmp_path, table=table)
    refused(
        tmp_path,
        capsys,
        "arrays",
        files,
        r"pairs\.parquet row 11: label 1 differs from label 0 of row 10 "
        r"for image 'im5'",
    )


def clip_tree(tmp_path, numbers=(0, 1), dims=(DIM, DIM)) -> dict:
    root = tmp_path / "clip"
    for folder in ("img_emb", "text_emb", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for number, dim in zip(numbers, dims):
        np.save(root / "img_emb" / f"img_emb_{number}.npy", vectors(4, dim, seed=number))
        np.save(root / "text_emb" / f"text_emb_{number}.npy", vectors(4, DIM, seed=10 + number))
        table = pa.table({"image_path": [f"{number}/{r}.jpg" for r in range(4)], "caption": ["c"] * 4})
        pq.write_table(table, root / "metadata" / f"metadata_{number}.parquet")
    return {"root": root}


def test_clip_retrieval_trees_with_missing_files_other_dims_or_columns_are_refused(tmp_path, capsys):
    files = clip_tree(tmp_path, dims=(DIM, DIM + 1))
    refused(
        tmp_path,
        capsys,
        "clip-retrieval",
        files,
        r"img_emb_1\.npy: image embeddings have dim 9, but .*img_emb_0"
        r"\.npy has 8",
    )
    files = clip_tree(tmp_path)
    (files["root"] / "text_emb" / "text_emb_1.npy").unlink()
    refused(tmp_path, capsys, "clip-retrieval", files, r"text_emb/text_emb_1\.npy: missing; .*img_emb_1\.npy has no")
    files = clip_tree(tmp_path)
    pq.write_table(
        pa.table({"url": ["x"] * 4, "caption": ["c"] * 4}), files["root"] / "metadata" / "metadata_1.parquet"
    )
    refused(tmp_path, capsys, "clip-retrieval", files, r"metadata_1\.parquet: column 'image_path' missing")
    files = clip_tree(tmp_path)
    table = pa.table({"image_path": ["a", "b", None, "d"], "caption": ["c"] * 4})
    pq.write_table(table, files["root"] / "metadata" / "metadata_1.parquet")
    refused(tmp_path, capsys, "clip-retrieval", files, r"metadata_1\.parquet row 2: 'image_path' is missing")
    refused(tmp_path, capsys, "clip-retrieval", {"root": tmp_path / "nowhere"}, r"nowhere: clip-retrieval output not")


def test_flags_that_do_not_fit_the_format_are_refused(tmp_path, capsys):
    files = arrays_input(tmp_path)
    refused(
        tmp_path, capsys, "pt", files, r"--format pt needs --metadata; it takes exactly --images --texts --metadata"
    )
    refused(tmp_path, capsys, "arrays", {**files, "root": tmp_path}, r"--format arrays takes no --root")
    refused(tmp_path, capsys, "parquet", files, r"--format: unknown import format 'parquet'; choose one of: arrays")


def test_the_library_call_raises_bad_input(tmp_path):
    files = arrays_input(tmp_path, texts=vectors(N + 1))
    with pytest.raises(BadInput, match=r"txt\.npy: the array has 13 rows"):
        import_cache(ImportRequest(format="arrays", out=tmp_path / "c", image_model="i", text_model="t", **files))
    with pytest.raises(BadInput, match="--shard-size must be >= 1"):
        ImportRequest(format="arrays", out=tmp_path / "c", image_model="i", text_model="t", shard_size=0)
