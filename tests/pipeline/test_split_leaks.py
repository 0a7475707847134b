"""`xalign split`: duplicate images stay together, --predefined follows the dataset, --verify finds leaks."""

import json

import h5py
import numpy as np
from conftest import write_synthetic_cache

from encoding import cache, split


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
        assert split.main([str(path), "--val", "8", "--test", "8", "--seed", str(seed)]) == 0
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
