"""A cache built by hand from DESIGN "Cache format" alone (h5py and json, no project code but the contract's
fingerprint definition) trains and evaluates: keys the project adds beyond the contract are derived when absent."""

import hashlib
import json

import h5py
import numpy as np
import pytest

from encoding import cache
from encoding.errors import BadInput
from encoding.fingerprints import cache_fingerprint, splits_fingerprint
from pipeline import cli

CONTRACT_KEYS = {
    "format",
    "version",
    "dataset",
    "image_model",
    "text_model",
    "num_images",
    "num_captions",
    "shards",
    "skipped",
    "complete",
    "versions",
    "created",
}
SHARD_KEYS = {"file", "num_images", "num_captions", "sha256"}
IMAGE_DIM, TEXT_DIM = 6, 5


def write_shard(path, ids: list[str], embeddings, owners: list[str], captions, texts: list[str]) -> dict:
    """One shard with exactly the contract's datasets; its `shards` entry (file, counts, sha256)."""
    strings = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.create_dataset("images/ids", data=np.array(ids, dtype=object), dtype=strings)
        f.create_dataset("images/embeddings", data=embeddings.astype(np.float32))
        f.create_dataset("images/paths", data=np.array([f"/data/{i}.jpg" for i in ids], dtype=object), dtype=strings)
        f.create_dataset("captions/image_ids", data=np.array(owners, dtype=object), dtype=strings)
        f.create_dataset("captions/embeddings", data=captions.astype(np.float32))
        f.create_dataset("captions/text", data=np.array(texts, dtype=object), dtype=strings)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"file": path.name, "num_images": len(ids), "num_captions": len(owners), "sha256": digest}


def write_contract_cache(cache_dir, fingerprint: bool = True):
    """A 40-image, two-shard cache whose captions are noisy linear images of their image's embedding;
    metadata.json holds the contract keys only (plus the Provenance `fingerprint` when `fingerprint`)."""
    cache_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, IMAGE_DIM))
    mix = rng.normal(size=(IMAGE_DIM, TEXT_DIM))
    shards = []
    for index, rows in enumerate((range(0, 20), range(20, 40))):
        owners = [i for i in rows for _ in range(1 + i % 2)]
        captions = images[owners] @ mix + 0.1 * rng.normal(size=(len(owners), TEXT_DIM))
        ids = [f"im{i:02d}" for i in rows]
        texts = [f"caption {k} of im{i:02d}" for k, i in enumerate(owners)]
        path = cache_dir / f"shard-{index:05d}.h5"
        shards.append(write_shard(path, ids, images[list(rows)], [f"im{i:02d}" for i in owners], captions, texts))
    weights = "sha256:" + "0" * 64
    model = {"dtype": "float32", "normalized": False, "weights": weights}
    meta = {
        "format": "xalign-cache",
        "version": 1,
        "dataset": {"kind": "folder", "root": str(cache_dir), "annotations": None},
        "image_model": {"spec": "hand:image", "dim": IMAGE_DIM, **model},
        "text_model": {"spec": "hand:text", "dim": TEXT_DIM, **model},
        "num_images": 40,
        "num_captions": sum(s["num_captions"] for s in shards),
        "shards": shards,
        "skipped": [],
        "complete": True,
        "versions": {"torch": "2.4.0", "transformers": None, "open_clip": None, "sentence-transformers": None},
        "created": "2025-01-01T00:00:00+00:00",
    }
    if fingerprint:
        meta["fingerprint"] = cache_fingerprint(meta)
    (cache_dir / "metadata.json").write_text(json.dumps(meta))
    return cache_dir, meta


def write_contract_splits(cache_dir, meta: dict) -> None:
    """`splits.json`: 24/8/8 images by a seeded permutation, tuning the first 12 of train, with both fingerprints."""
    ids = [f"im{i:02d}" for i in np.random.default_rng(1).permutation(40)]
    splits = {"seed": 1, "method": "random", "train": ids[:24], "val": ids[24:32], "test": ids[32:], "tuning": ids[:12]}
    splits.update(fingerprint=splits_fingerprint(splits), cache_fingerprint=cache_fingerprint(meta))
    (cache_dir / "splits.json").write_text(json.dumps(splits))


@pytest.mark.parametrize("fingerprint", [True, False], ids=["with-fingerprint", "cache-format-keys-only"])
def test_contract_only_metadata_opens_with_project_keys_derived(tmp_path, fingerprint):
    cache_dir, meta = write_contract_cache(tmp_path / "cache", fingerprint)
    assert set(meta) - {"fingerprint"} == CONTRACT_KEYS and all(set(s) == SHARD_KEYS for s in meta["shards"])
    opened = cache.open_cache(cache_dir)
    assert opened.meta["num_shards"] == 2 and [s["index"] for s in opened.shards] == [0, 1]
    assert opened.fingerprint == cache_fingerprint(meta) and opened.verified
    arrays = opened.arrays()
    assert arrays.image_embeddings.shape == (40, IMAGE_DIM) and len(arrays.caption_text) == meta["num_captions"]


def test_a_project_key_of_the_wrong_type_is_still_refused(tmp_path):
    cache_dir, meta = write_contract_cache(tmp_path / "cache")
    meta["shards"][1]["index"] = "1"
    (cache_dir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BadInput, match=r"metadata.json: key 'shards\[1\].index' is string '1', expected an"):
        cache.open_cache(cache_dir)


def test_a_hand_built_contract_cache_trains_and_evaluates(tmp_path, monkeypatch):
    cache_dir, meta = write_contract_cache(tmp_path / "cache")
    write_contract_splits(cache_dir, meta)
    (tmp_path / "run.yaml").write_text(
        f"name: contract\ndata: {{cache: {cache_dir}}}\nmodel: {{type: linear, output_dim: 8}}\n"
        "training: {num_epochs: 2, batch_size: 8, device: cpu}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "run.yaml"]) == 0
    run = tmp_path / "results" / "contract"
    assert cli.main(["evaluate", str(run), "--out", str(tmp_path / "again.json")]) == 0
    saved, again = (json.loads(path.read_text()) for path in (run / "metrics.json", tmp_path / "again.json"))
    assert saved["num_images"] == 8 and saved["provenance"]["cache_fingerprint"] == meta["fingerprint"]
    for direction in ("i2t", "t2i"):
        assert again[direction] == pytest.approx(saved[direction])
    assert again["rsum"] == pytest.approx(saved["rsum"]) and again["provenance"] == saved["provenance"]
