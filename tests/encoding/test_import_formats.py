"""`xalign import`: the seed pipeline's .pt triple, a clip-retrieval tree and plain arrays become caches whose
`xalign evaluate --cache` metrics equal a numpy computation on the original arrays; reruns, resume, provenance."""

import csv
import json

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import save_file

from encoding import cache
from encoding.imports import writer
from encoding.imports.embedding_files import RowArrays, open_npy
from pipeline import cli

DIM = 16


def pairs_data(num_images: int = 60, seed: int = 0, scale: float = 1.0):
    """(image vectors (n, D), owner of each row (N,), image rows (N, D), text rows (N, D)): 1-3 captions per
    image, rows shuffled so an image's rows are scattered; texts are noisy copies of their image."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(num_images, DIM)).astype(np.float32)
    owners = np.repeat(np.arange(num_images), 1 + np.arange(num_images) % 3)
    rng.shuffle(owners)
    texts = images[owners] + 1.2 * rng.normal(size=(len(owners), DIM)).astype(np.float32)
    return images, owners, scale * images[owners], scale * texts


def expected_metrics(images, owners, texts, ids: list[str], test_ids: list[str]) -> dict:
    """Recall@1/5/10 both ways on the original arrays for the test images (COCO-aware i2t: any own caption)."""
    keep = np.array([ids[i] in set(test_ids) for i in range(len(images))])
    gallery = images[keep] / np.linalg.norm(images[keep], axis=1, keepdims=True)
    row_of = np.cumsum(keep) - 1
    captions = np.flatnonzero(keep[owners])
    query = texts[captions] / np.linalg.norm(texts[captions], axis=1, keepdims=True)
    target = row_of[owners[captions]]
    scores = gallery @ query.T  # (n, m)
    own = scores[target, np.arange(len(target))]
    t2i = 1 + (scores > own).sum(axis=0)
    best = np.array([scores[i, target == i].max() for i in range(len(gallery))])
    i2t = 1 + (scores > best[:, None]).sum(axis=1)
    return {
        name: {f"R@{k}": 100 * float(np.mean(r <= k)) for k in (1, 5, 10)} for name, r in (("i2t", i2t), ("t2i", t2i))
    }


def import_args(kind: str, files: dict, out, *extra) -> list[str]:
    flags = [f"--{name}={path}" for name, path in files.items()]
    return [
        "import",
        "--format",
        kind,
        *flags,
        "--image-model",
        "test:img",
        "--text-model",
        "test:txt",
        "--out",
        str(out),
        "--shard-size",
        "16",
        *extra,
    ]


def check_metrics(cache_dir, images, owners, texts, ids):
    assert cli.main(["split", str(cache_dir), "--test", "0.5", "--val", "0.1"]) == 0
    assert cli.main(["evaluate", "--cache", str(cache_dir), "--device", "cpu"]) == 0
    got = json.loads((cache_dir / "metrics-test.json").read_text())
    test_ids = json.loads((cache_dir / "splits.json").read_text())["test"]
    assert len(test_ids) >= 20
    want = expected_metrics(images, owners, texts, ids, test_ids)
    for direction in ("i2t", "t2i"):
        for k in ("R@1", "R@5", "R@10"):
            assert got[direction][k] == pytest.approx(want[direction][k]), (direction, k)
    assert 0 < got["t2i"]["R@1"] < 100


def write_pt(tmp_path, images, owners, texts, ids) -> dict:
    torch.save(torch.from_numpy(images), tmp_path / "img.pt")
    torch.save({"embeddings": torch.from_numpy(texts)}, tmp_path / "txt.pt")
    metadata = {"image_ids": [int(ids[i]) for i in owners], "captions": [f"caption {r}" for r in range(len(owners))]}
    (tmp_path / "meta.json").write_text(json.dumps(metadata))
    return {"images": tmp_path / "img.pt", "texts": tmp_path / "txt.pt", "metadata": tmp_path / "meta.json"}


def test_a_seed_style_pt_triple_imports_and_evaluates_like_numpy(tmp_path, capsys):
    images, owners, image_rows, texts = pairs_data()
    ids = [str(1000 + i) for i in range(len(images))]
    files = write_pt(tmp_path, image_rows, owners, texts, ids)
    assert cli.main(import_args("pt", files, tmp_path / "cache", "--dtype", "float32")) == 0
    assert (
        capsys.readouterr().out.strip().endswith(f"{len(images)} images, {len(owners)} captions, 0 skipped (complete)")
    )
    meta = cache.read_metadata(tmp_path / "cache")
    assert meta["dataset"]["kind"] == "import" and meta["dataset"]["format"] == "pt"
    assert meta["image_model"]["spec"] == "test:img" and meta["image_model"]["library"] == "import"
    arrays = cache.load_cache(tmp_path / "cache")
    first_seen = list(dict.fromkeys(ids[i] for i in owners))
    assert arrays.image_ids.tolist() == first_seen
    assert arrays.caption_text.tolist()[:2] == [f"caption {r}" for r in np.flatnonzero(owners == owners[0])[:2]]
    check_metrics(tmp_path / "cache", images, owners, texts, ids)


def test_a_clip_retrieval_tree_of_two_numbered_files_imports_and_evaluates(tmp_path):
    images, _, _, _ = pairs_data()
    owners = np.random.default_rng(3).permutation(len(images))  # one caption per image, as clip-retrieval writes
    texts = images[owners] + 1.2 * np.random.default_rng(4).normal(size=(len(owners), DIM)).astype(np.float32)
    ids = [f"/data/img{i:03d}.jpg" for i in range(len(images))]
    for folder in ("img_emb", "text_emb", "metadata"):
        (tmp_path / "clip" / folder).mkdir(parents=True)
    for number, rows in enumerate((slice(0, 25), slice(25, None))):
        np.save(tmp_path / "clip" / "img_emb" / f"img_emb_{number}.npy", images[owners[rows]].astype(np.float16))
        np.save(tmp_path / "clip" / "text_emb" / f"text_emb_{number}.npy", texts[rows].astype(np.float16))
        table = pa.table({"image_path": [ids[i] for i in owners[rows]], "caption": [f"c{i}" for i in owners[rows]]})
        pq.write_table(table, tmp_path / "clip" / "metadata" / f"metadata_{number}.parquet")
    assert cli.main(import_args("clip-retrieval", {"root": tmp_path / "clip"}, tmp_path / "cache")) == 0
    arrays = cache.load_cache(tmp_path / "cache")
    assert arrays.image_paths.tolist() == [ids[i] for i in owners] and len(arrays.caption_text) == len(images)
    half = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731 (the stored inputs were fp16)
    check_metrics(tmp_path / "cache", half(images), owners, half(texts), ids)


@pytest.mark.parametrize("arrays_format,table_format", [("npy", "csv"), ("safetensors", "parquet")])
def test_plain_arrays_import_and_evaluate(tmp_path, arrays_format, table_format):
    images, owners, image_rows, texts = pairs_data(seed=1)
    ids = [f"id-{i}" for i in range(len(images))]
    if arrays_format == "npy":
        np.save(tmp_path / "img.npy", image_rows)
        np.save(tmp_path / "txt.npy", texts.astype(np.float64))
    else:
        save_file({"image": image_rows}, tmp_path / "img.safetensors")
        save_file({"text": texts}, tmp_path / "txt.safetensors")
    rows = [{"image_id": ids[i], "caption": f"a photo {r}", "label": int(i % 7)} for r, i in enumerate(owners)]
    pairs = tmp_path / f"pairs.{table_format}"
    if table_format == "csv":
        with open(pairs, "w", newline="") as f:
            csv.DictWriter(f, ["image_id", "caption", "label"]).writeheader()
            csv.DictWriter(f, ["image_id", "caption", "label"]).writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), pairs)
    files = {"images": tmp_path / f"img.{arrays_format}", "texts": tmp_path / f"txt.{arrays_format}", "pairs": pairs}
    assert cli.main(import_args("arrays", files, tmp_path / "cache", "--dtype", "float32")) == 0
    arrays = cache.load_cache(tmp_path / "cache")
    assert arrays.image_labels.tolist() == [int(i.split("-")[1]) % 7 for i in arrays.image_ids]
    check_metrics(tmp_path / "cache", images, owners, texts, ids)


def write_arrays(tmp_path, scale: float = 1.0, seed: int = 0) -> dict:
    images, owners, image_rows, texts = pairs_data(num_images=40, seed=seed, scale=scale)
    np.save(tmp_path / "img.npy", image_rows)
    np.save(tmp_path / "txt.npy", texts)
    pq.write_table(
        pa.table({"image_id": [f"im{i}" for i in owners], "caption": ["c"] * len(owners)}), tmp_path / "pairs.parquet"
    )
    return {"images": tmp_path / "img.npy", "texts": tmp_path / "txt.npy", "pairs": tmp_path / "pairs.parquet"}


def test_same_input_twice_same_fingerprint_rerun_is_a_no_op_other_input_refused(tmp_path, capsys):
    files = write_arrays(tmp_path)
    assert cli.main(import_args("arrays", files, tmp_path / "a")) == 0
    assert cli.main(import_args("arrays", files, tmp_path / "b")) == 0
    first, second = (cache.open_cache(tmp_path / name).fingerprint for name in ("a", "b"))
    assert first == second
    before = (tmp_path / "a" / "metadata.json").read_bytes()
    capsys.readouterr()
    assert cli.main(import_args("arrays", files, tmp_path / "a")) == 0
    assert "(complete)" in capsys.readouterr().out
    assert (tmp_path / "a" / "metadata.json").read_bytes() == before
    files = write_arrays(tmp_path, seed=5)  # other vectors in the same files
    assert cli.main(import_args("arrays", files, tmp_path / "a")) == 2
    assert "a/metadata.json: this cache was built with dataset.inputs[0].sample_sha256=" in capsys.readouterr().err
    files = write_arrays(tmp_path)
    assert cli.main(import_args("arrays", files, tmp_path / "a", "--dtype", "float32")) == 2
    assert "image_model.dtype" in capsys.readouterr().err
    other_model = [arg if arg != "test:img" else "test:other" for arg in import_args("arrays", files, tmp_path / "a")]
    assert cli.main(other_model) == 2
    assert 'image_model.spec="test:img", not "test:other"' in capsys.readouterr().err
    assert cli.main(import_args("arrays", files, tmp_path / "a")) == 0


def test_a_killed_import_resumes_at_the_missing_shards(tmp_path, monkeypatch):
    files = write_arrays(tmp_path)
    assert cli.main(import_args("arrays", files, tmp_path / "whole")) == 0
    real, written = cache.write_shard, []

    def dies_after_one(out, index, data, dtype):
        if written:
            raise KeyboardInterrupt
        written.append(index)
        return real(out, index, data, dtype)

    monkeypatch.setattr(writer.cache, "write_shard", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        cli.main(import_args("arrays", files, tmp_path / "killed"))
    meta = cache.read_metadata(tmp_path / "killed")
    assert not meta["complete"] and len(meta["shards"]) == 1
    assert cli.main(["evaluate", "--cache", str(tmp_path / "killed"), "--split", "all"]) == 2
    monkeypatch.setattr(writer.cache, "write_shard", real)
    first_shard = (tmp_path / "killed" / "shard-00000.h5").stat().st_mtime_ns
    assert cli.main(import_args("arrays", files, tmp_path / "killed")) == 0
    assert (tmp_path / "killed" / "shard-00000.h5").stat().st_mtime_ns == first_shard
    assert cache.open_cache(tmp_path / "killed").fingerprint == cache.open_cache(tmp_path / "whole").fingerprint


def test_unnormalised_vectors_are_normalised_and_that_is_recorded(tmp_path):
    files = write_arrays(tmp_path, scale=3.0)
    assert cli.main(import_args("arrays", files, tmp_path / "cache")) == 0
    meta = cache.read_metadata(tmp_path / "cache")
    assert meta["image_model"]["normalized_on_import"] and meta["text_model"]["normalized_on_import"]
    with h5py.File(tmp_path / "cache" / "shard-00000.h5") as f:
        norms = np.linalg.norm(f["captions/embeddings"][()].astype(np.float32), axis=1)
    assert np.allclose(norms, 1, atol=2e-3)
    unit = np.load(files["images"])
    np.save(files["images"], unit / np.linalg.norm(unit, axis=1, keepdims=True))
    assert cli.main(import_args("arrays", files, tmp_path / "unit")) == 0
    meta = cache.read_metadata(tmp_path / "unit")
    assert not meta["image_model"]["normalized_on_import"] and meta["text_model"]["normalized_on_import"]
    fingerprints = {cache.open_cache(tmp_path / name).fingerprint for name in ("cache", "unit")}
    assert len(fingerprints) == 2  # the flag is part of the model identity


def test_bfloat16_pt_and_safetensors_are_read(tmp_path):
    images, owners, image_rows, texts = pairs_data(num_images=20)
    torch.save(torch.from_numpy(image_rows).bfloat16(), tmp_path / "img.pt")
    torch.save(torch.from_numpy(texts).bfloat16(), tmp_path / "txt.pt")
    (tmp_path / "meta.json").write_text(json.dumps({"image_ids": [f"i{i}" for i in owners]}))
    files = {"images": tmp_path / "img.pt", "texts": tmp_path / "txt.pt", "metadata": tmp_path / "meta.json"}
    assert cli.main(import_args("pt", files, tmp_path / "pt")) == 0
    from_pt = cache.load_cache(tmp_path / "pt")
    assert set(from_pt.caption_text.tolist()) == {""}
    import safetensors.torch

    safetensors.torch.save_file({"x": torch.from_numpy(image_rows).bfloat16()}, tmp_path / "img.safetensors")
    safetensors.torch.save_file({"x": torch.from_numpy(texts).bfloat16()}, tmp_path / "txt.safetensors")
    pq.write_table(
        pa.table({"image_id": [f"i{i}" for i in owners], "caption": [""] * len(owners)}), tmp_path / "p.parquet"
    )
    files = {
        "images": tmp_path / "img.safetensors",
        "texts": tmp_path / "txt.safetensors",
        "pairs": tmp_path / "p.parquet",
    }
    assert cli.main(import_args("arrays", files, tmp_path / "st")) == 0
    from_st = cache.load_cache(tmp_path / "st")
    assert np.array_equal(from_st.image_embeddings, from_pt.image_embeddings)
    assert np.array_equal(from_st.caption_embeddings, from_pt.caption_embeddings)


def test_rows_are_taken_across_files_in_any_order(tmp_path):
    parts = [np.arange(i, i + n * 3, dtype=np.float32).reshape(n, 3) for i, n in ((0, 4), (100, 5))]
    for i, part in enumerate(parts):
        np.save(tmp_path / f"{i}.npy", part)
    rows = RowArrays([open_npy(tmp_path / f"{i}.npy") for i in range(2)], "vectors")
    whole = np.concatenate(parts)
    for taken in ([8, 0, 5, 5, 3], [1, 2, 3, 4, 5], [6], list(range(9))):
        assert np.array_equal(rows.take(np.array(taken)), whole[taken])
    assert rows.locate(6) == f"{tmp_path / '1.npy'} row 2"
    starts, blocks = zip(*rows.chunks(3))
    assert starts == (0, 3, 4, 7) and np.array_equal(np.concatenate(blocks), whole)


def test_a_legacy_pt_is_read_and_an_imported_cache_trains(tmp_path, monkeypatch):
    images, owners, image_rows, texts = pairs_data(num_images=40)
    files = write_pt(tmp_path, image_rows, owners, texts, [str(i) for i in range(40)])
    torch.save(torch.from_numpy(image_rows), files["images"], _use_new_zipfile_serialization=False)
    assert cli.main(import_args("pt", files, tmp_path / "cache")) == 0
    assert cli.main(["split", str(tmp_path / "cache")]) == 0
    (tmp_path / "run.yaml").write_text(
        f"name: imported\ndata: {{cache: {tmp_path / 'cache'}}}\nmodel: {{type: linear, output_dim: 8}}\n"
        "training: {num_epochs: 1, batch_size: 8, device: cpu}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "run.yaml"]) == 0
    metrics = json.loads((tmp_path / "results" / "imported" / "metrics.json").read_text())
    assert metrics["provenance"]["cache_fingerprint"] == cache.open_cache(tmp_path / "cache").fingerprint
