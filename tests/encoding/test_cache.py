"""Cache v1: atomic shards, metadata bookkeeping, round trip, refusal to mix, and split disjointness."""

import json

import h5py
import numpy as np
import pytest
from conftest import write_synthetic_cache

from encoding import cache
from encoding.commands import split
from encoding.errors import BadInput
from pipeline.data.split_tensors import load_splits


def test_round_trip_keeps_images_once_and_captions_keyed_by_id(tmp_path):
    path = write_synthetic_cache(tmp_path / "c", num_images=30, shard_size=12)
    meta = cache.read_metadata(path)
    assert meta["complete"] and meta["num_shards"] == 3 and [s["index"] for s in meta["shards"]] == [0, 1, 2]
    assert meta["num_images"] == 30 and meta["num_captions"] == sum((1, 2, 3)[i % 3] for i in range(30))
    arrays = cache.load_cache(path)
    assert len(set(arrays.image_ids)) == 30
    assert (arrays.image_ids[arrays.caption_image_index] == arrays.caption_image_ids).all()
    assert not list(path.glob("*.tmp"))
    with h5py.File(path / "shard-00000.h5") as f:
        assert set(f["images"]) == {"ids", "embeddings", "paths", "labels", "pixel_sha1"}
        assert set(f["captions"]) == {"image_ids", "embeddings", "text"}
        # an image and all its captions live in the same shard
        assert set(f["captions/image_ids"].asstr()[()]) == set(f["images/ids"].asstr()[()])


def test_select_keeps_every_caption_of_the_chosen_images(tmp_path):
    arrays = cache.load_cache(write_synthetic_cache(tmp_path / "c", num_images=9))
    chosen = arrays.select(["img0002", "img0005"])
    assert list(chosen.image_ids) == ["img0002", "img0005"]
    assert list(chosen.caption_image_ids) == ["img0002"] * 3 + ["img0005"] * 3
    assert list(chosen.caption_image_index) == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(chosen.image_embeddings[1], arrays.image_embeddings[5])


def test_incomplete_cache_is_refused_by_the_reader(tmp_path):
    path = write_synthetic_cache(tmp_path / "c", num_images=30, shard_size=12)
    meta = json.loads((path / cache.METADATA).read_text())
    meta["shards"], meta["complete"] = meta["shards"][:2], False
    (path / cache.METADATA).write_text(json.dumps(meta))
    with pytest.raises(BadInput, match=r"cache is incomplete \(2 of 3 shards\)"):
        cache.load_cache(path)
    assert cache.finished_shards(path) == {0, 1}


def test_metadata_header_mismatch_is_refused(tmp_path):
    path = write_synthetic_cache(tmp_path / "c", num_images=5)
    header = {k: cache.read_metadata(path)[k] for k in ("dataset", "shard_size")}
    cache.init_metadata(path, header)  # same header: fine
    with pytest.raises(BadInput, match=r"built with shard_size=25, not 7"):
        cache.init_metadata(path, {**header, "shard_size": 7})


def test_not_a_cache(tmp_path):
    with pytest.raises(BadInput, match=r"not an xalign cache"):
        cache.read_metadata(tmp_path)


def test_split_is_image_level_and_disjoint(synthetic_cache):
    splits = json.loads((synthetic_cache / cache.SPLITS).read_text())
    sets = {name: set(splits[name]) for name in ("train", "val", "test")}
    assert len(sets["val"]) == 10 and len(sets["test"]) == 10 and len(sets["train"]) == 40
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    assert set(splits["tuning"]) <= sets["train"] and len(splits["tuning"]) == 20
    loaded = load_splits(synthetic_cache, ["train", "test"])
    for name, data in loaded.items():
        assert set(data.image_ids) == sets[name]
        # every caption of a split's image is in that split, pointing at the right row
        assert len(data.text) == len(data.caption_image_index)
    assert split.main([str(synthetic_cache), "--verify"]) == 0


def test_split_is_seeded(synthetic_cache):
    first = json.loads((synthetic_cache / cache.SPLITS).read_text())
    split.main([str(synthetic_cache), "--val", "10", "--test", "10", "--tuning", "20", "--seed", "0", "--force"])
    assert json.loads((synthetic_cache / cache.SPLITS).read_text()) == first
    split.main([str(synthetic_cache), "--val", "10", "--test", "10", "--seed", "1", "--force"])
    second = json.loads((synthetic_cache / cache.SPLITS).read_text())
    assert second["test"] != first["test"] and second["fingerprint"] != first["fingerprint"]
    fingerprint = cache.read_metadata(synthetic_cache)["fingerprint"]
    assert second["cache_fingerprint"] == first["cache_fingerprint"] == fingerprint


def test_a_split_is_replaced_only_with_force(synthetic_cache, capsys):
    before = (synthetic_cache / cache.SPLITS).read_bytes()
    with pytest.raises(BadInput, match=r"splits\.json: exists; .*Pass --force"):
        split.main([str(synthetic_cache), "--seed", "1"])
    assert (synthetic_cache / cache.SPLITS).read_bytes() == before
    assert split.main([str(synthetic_cache), "--seed", "1", "--force"]) == 0
    assert "note: replaced the split with fingerprint" in capsys.readouterr().err


def test_unknown_split_name_lists_available(synthetic_cache):
    with pytest.raises(BadInput, match=r"no split 'holdout'; available: test, train, tuning, val, all"):
        load_splits(synthetic_cache, ["holdout"])
