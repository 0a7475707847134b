"""`xalign split`: duplicate images stay together, --predefined follows the dataset, --verify finds leaks,
and a split that is not leak-free is never written."""

import json

import h5py
import numpy as np
import pytest
from conftest import write_synthetic_cache

from encoding import cache
from encoding import split as splitter
from encoding.commands import split


def _set_column(cache_dir, key: str, values: list[str]) -> None:
    """Overwrite `images/<key>` across the shards of a synthetic cache (values in cache order)."""
    start = 0
    for shard in cache.read_metadata(cache_dir)["shards"]:
        with h5py.File(cache_dir / shard["file"], "r+") as f:
            n = len(f["images/ids"])
            if key in f["images"]:
                del f[f"images/{key}"]
            f["images"].create_dataset(
                key, data=np.array(values[start : start + n], dtype=object), dtype=h5py.string_dtype("utf-8")
            )
            start += n


def _splits(cache_dir) -> dict:
    return json.loads((cache_dir / cache.SPLITS).read_text())


def test_duplicate_images_land_in_one_split(tmp_path):
    path = write_synthetic_cache(tmp_path / "c", num_images=40)
    _set_column(path, "pixel_sha1", ["same"] * 8 + [f"u{i}" for i in range(32)])
    for seed in range(5):
        assert split.main([str(path), "--val", "8", "--test", "8", "--seed", str(seed), "--force"]) == 0
        splits = _splits(path)
        homes = {name for name in ("train", "val", "test") if "img0000" in splits[name]}
        group = {f"img{i:04d}" for i in range(8)}
        assert len(homes) == 1 and group <= set(splits[homes.pop()])
        assert splits["duplicates"] == "pixel_sha1"


def test_predefined_split_follows_the_dataset_and_moves_duplicates_to_test(tmp_path):
    path = write_synthetic_cache(tmp_path / "c", num_images=12)
    names = ["train"] * 4 + ["restval"] * 2 + ["val"] * 3 + ["test"] * 3
    _set_column(path, "splits", names)
    _set_column(path, "pixel_sha1", ["twin"] + [f"u{i}" for i in range(10)] + ["twin"])  # img0000 ~ img0011 (test)
    assert split.main([str(path), "--predefined"]) == 0
    splits = _splits(path)
    assert splits["method"] == "predefined"
    assert splits["train"] == [f"img{i:04d}" for i in range(1, 6)]  # restval counts as train
    assert splits["val"] == ["img0006", "img0007", "img0008"]
    assert splits["test"] == ["img0000", "img0009", "img0010", "img0011"]
    assert split.main([str(path), "--verify"]) == 0


def test_verify_names_the_leaking_ids(tmp_path, capsys):
    path = write_synthetic_cache(tmp_path / "c", num_images=30)
    _set_column(path, "pixel_sha1", ["pair", "pair"] + [f"u{i}" for i in range(28)])
    assert split.main([str(path), "--val", "5", "--test", "5"]) == 0
    splits = _splits(path)
    partner_split = next(n for n in ("train", "val", "test") if "img0000" in splits[n])
    other = next(n for n in ("train", "val", "test") if n != partner_split)
    splits[partner_split].remove("img0001")
    splits[other].append("img0001")
    leaked = next(i for i in splits["train"] if i not in ("img0000", "img0001"))
    splits["test"].append(leaked)
    cache.write_splits(path, splits)
    capsys.readouterr()
    assert split.main([str(path), "--verify"]) == 1
    err = capsys.readouterr().err
    assert f"image {leaked} is in both train and test" in err
    assert "duplicate images ['img0000', 'img0001'] are split across" in err


def _predefined(tmp_path, names: list[str], sha1s: list[str]) -> dict:
    """`split_cache(predefined=True)` on a synthetic cache whose images have these dataset splits and pixel hashes."""
    path = write_synthetic_cache(tmp_path / "c", num_images=len(names))
    _set_column(path, "splits", names)
    _set_column(path, "pixel_sha1", sha1s)
    payload = splitter.split_cache(path, predefined=True)
    assert payload == _splits(path) and splitter.verify(path) == []
    return payload


def test_predefined_duplicate_group_spanning_val_and_test_goes_wholly_to_test(tmp_path):
    names = ["train"] * 4 + ["val"] * 3 + ["test"] * 3
    sha1s = [f"u{i}" for i in range(5)] + ["twin", "u5", "u6", "twin", "u7"]  # img0005 (val) ~ img0008 (test)
    splits = _predefined(tmp_path, names, sha1s)
    assert splits["val"] == ["img0004", "img0006"]
    assert splits["test"] == ["img0005", "img0007", "img0008", "img0009"]
    assert splits["train"] == ["img0000", "img0001", "img0002", "img0003"]


def test_predefined_duplicate_group_spanning_train_and_val_goes_wholly_to_val(tmp_path):
    names = ["train"] * 4 + ["restval"] + ["val"] * 3 + ["test"] * 2
    sha1s = ["twin", "u0", "u1", "u2", "twin", "u3", "twin", "u4", "u5", "u6"]  # img0000, img0004 (restval) ~ img0006
    splits = _predefined(tmp_path, names, sha1s)
    assert splits["train"] == ["img0001", "img0002", "img0003"]
    assert splits["val"] == ["img0000", "img0004", "img0005", "img0006", "img0007"]
    assert splits["test"] == ["img0008", "img0009"]


def test_a_leaking_split_is_not_written(tmp_path, monkeypatch):
    path = write_synthetic_cache(tmp_path / "c", num_images=20)
    assert split.main([str(path), "--val", "4", "--test", "4"]) == 0
    before = (path / cache.SPLITS).read_bytes()

    def leaky(ids, groups, val, test, seed):  # a split method with a bug: one image in train and test
        ids = sorted(ids)
        return {"train": ids[:12], "val": ids[12:16], "test": [ids[0], *ids[16:]]}

    monkeypatch.setattr(splitter, "random_split", leaky)
    with pytest.raises(RuntimeError, match=r"splits.json not written: the split is not leak-free.*img0000"):
        splitter.split_cache(path, seed=3, force=True)
    assert (path / cache.SPLITS).read_bytes() == before
    (path / cache.SPLITS).unlink()
    with pytest.raises(RuntimeError, match="not leak-free"):
        split.main([str(path), "--seed", "3"])
    assert not (path / cache.SPLITS).exists()
