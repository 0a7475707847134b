"""A damaged cache is refused with `BadInput` naming the file and key: metadata.json, shard files, hashes,
embeddings, splits.json, and the split check `load_splits` runs before training."""

import dataclasses
import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import write_synthetic_cache

from encoding import cache, cache_checks
from encoding.commands import split
from encoding.errors import BadInput
from pipeline import cli
from pipeline.data.split_tensors import load_splits

SHA = r"[0-9a-f]{64}"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """30 images in 3 shards of 12/12/6, split 20/5/5 with 8 tuning images; copied by `cache_copy`."""
    path = write_synthetic_cache(tmp_path_factory.mktemp("pristine") / "cache", num_images=30, shard_size=12)
    assert split.main([str(path), "--val", "5", "--test", "5", "--tuning", "8"]) == 0
    return path


@pytest.fixture
def cache_copy(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "cache")


def edit_json(path, change) -> None:
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def rewrite_shard(cache_dir, index: int, **changes) -> None:
    """Rewrite shard `index` through the real writer with some fields changed; metadata's entry follows."""
    with h5py.File(cache_dir / cache.shard_name(index)) as f:
        data = cache.ShardData(
            image_ids=list(f["images/ids"].asstr()[()]),
            image_embeddings=f["images/embeddings"][()],
            image_paths=list(f["images/paths"].asstr()[()]),
            caption_image_ids=list(f["captions/image_ids"].asstr()[()]),
            caption_embeddings=f["captions/embeddings"][()],
            caption_text=list(f["captions/text"].asstr()[()]),
            image_labels=f["images/labels"][()],
            image_pixel_sha1=list(f["images/pixel_sha1"].asstr()[()]),
        )
    entry = cache.write_shard(cache_dir, index, dataclasses.replace(data, **changes), dtype="float32")
    cache.record_shard(cache_dir, entry)


def test_an_intact_cache_loads_with_and_without_hashing(cache_copy):
    verified, unverified = cache.load_cache(cache_copy), cache.load_cache(cache_copy, verify=False)
    np.testing.assert_array_equal(verified.image_embeddings, unverified.image_embeddings)
    assert len(verified.image_ids) == 30


def test_a_flipped_byte_in_the_embeddings_is_refused_naming_the_shard(pristine, cache_copy):
    shard = cache_copy / "shard-00001.h5"
    with h5py.File(shard) as f:
        offset = f["images/embeddings"].id.get_offset()
    data = bytearray(shard.read_bytes())
    data[offset + 1] ^= 0x01  # a mantissa bit of the first value: still finite
    shard.write_bytes(bytes(data))
    message = (
        rf"shard-00001.h5: sha256 {SHA} differs from metadata.json's {SHA}; the file changed after encoding "
        r"\(re-encode, or pass --no-verify to skip hashing\)"
    )
    with pytest.raises(BadInput, match=message):
        cache.load_cache(cache_copy)
    with pytest.raises(BadInput, match=message):
        load_splits(cache_copy, ["train"])
    flipped = cache.load_cache(cache_copy, verify=False)  # no hashing: the changed value goes unnoticed
    assert flipped.image_embeddings[12, 0] != cache.load_cache(pristine).image_embeddings[12, 0]
    assert len(load_splits(cache_copy, ["train"], verify=False)["train"].image_ids) == 20


def test_a_truncated_shard_is_bad_input_everywhere(cache_copy, capsys):
    shard = cache_copy / "shard-00002.h5"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(BadInput, match=rf"shard-00002.h5: sha256 {SHA} differs from metadata.json's"):
        cache.load_cache(cache_copy)
    with pytest.raises(BadInput, match=r"shard-00002.h5: not a readable HDF5 shard \(.*\); it is truncated or dam"):
        cache.load_cache(cache_copy, verify=False)
    assert cli.main(["split", str(cache_copy), "--verify"]) == 2
    assert "shard-00002.h5: not a readable HDF5 shard" in capsys.readouterr().err
    assert cli.main(["inspect", str(cache_copy)]) == 2
    out, err = capsys.readouterr()
    assert "CORRUPT: " in out and "2/3 verified" in out and "shard-00002.h5: not a readable HDF5 shard" in err
    shard.write_text("not HDF5 at all")
    with pytest.raises(BadInput, match=r"shard-00002.h5: not a readable HDF5 shard"):
        cache.load_cache(cache_copy, verify=False)


def test_a_deleted_shard_is_bad_input_everywhere(cache_copy, capsys):
    (cache_copy / "shard-00000.h5").unlink()
    message = r"shard-00000.h5: shard file missing \(listed in metadata.json\); rerun the same `xalign encode`"
    for verify in (True, False):
        with pytest.raises(BadInput, match=message):
            cache.load_cache(cache_copy, verify=verify)
    assert cli.main(["split", str(cache_copy), "--verify"]) == 2
    assert "shard-00000.h5: shard file missing" in capsys.readouterr().err
    assert cli.main(["inspect", str(cache_copy)]) == 2
    assert "shard-00000.h5: shard file missing" in capsys.readouterr().err
    assert cache.finished_shards(cache_copy) == {1, 2}  # a rerun of `xalign encode` rewrites it


def test_nan_embeddings_are_refused_even_when_the_hash_matches(cache_copy):
    with h5py.File(cache_copy / "shard-00001.h5") as f:
        text = f["captions/embeddings"][()]
    text[[2, 5]] = np.nan
    text[7, 0] = np.inf
    rewrite_shard(cache_copy, 1, caption_embeddings=text)
    with pytest.raises(BadInput, match=r"shard-00001.h5: 'captions/embeddings' has 3 of 24 rows with NaN or inf"):
        cache.load_cache(cache_copy)  # the hash matches the rewritten shard: the finite check catches it


def test_dims_and_row_counts_must_match_metadata(cache_copy):
    edit_json(cache_copy / cache.METADATA, lambda m: m["image_model"].update(dim=7))
    with pytest.raises(BadInput, match=r"shard-00000.h5: 'images/embeddings' has dim 12, metadata.json's image_mod"):
        cache.load_cache(cache_copy)

    def restore_dim_change_count(meta):
        meta["image_model"]["dim"] = 12
        meta["shards"][1]["num_captions"] = 5

    edit_json(cache_copy / cache.METADATA, restore_dim_change_count)
    with pytest.raises(
        BadInput, match=r"shard-00001.h5: 'captions/image_ids' has 24 rows, metadata.json's shards\[1\]"
    ):
        cache.load_cache(cache_copy)


def test_a_caption_of_an_image_missing_from_the_cache_is_refused(cache_copy):
    with h5py.File(cache_copy / "shard-00002.h5") as f:
        owners = list(f["captions/image_ids"].asstr()[()])
    rewrite_shard(cache_copy, 2, caption_image_ids=["ghost"] + owners[1:])
    with pytest.raises(BadInput, match=r"shard-00002.h5: 1 captions point at 1 image ids not in the cache, e.g. \['g"):
        cache.load_cache(cache_copy)


def test_a_shard_without_a_dataset_is_refused_naming_it(cache_copy):
    with h5py.File(cache_copy / "shard-00001.h5", "r+") as f:
        del f["captions/text"]
    with pytest.raises(BadInput, match=r"shard-00001.h5: no dataset 'captions/text'; expected an xalign shard"):
        cache.load_cache(cache_copy, verify=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("format"), r"'format' is None, expected 'xalign-cache'"),
        (lambda m: m["shards"][2].pop("sha256"), r"key 'shards\[2\].sha256' missing; expected a string"),
        (lambda m: m.update(num_shards="3"), r"key 'num_shards' is string '3', expected an integer"),
        (lambda m: m.update(complete=1), r"key 'complete' is number 1, expected a boolean"),
        (lambda m: m["text_model"].pop("dim"), r"key 'text_model.dim' missing; expected an integer"),
        (lambda m: m.update(shards={}), r"key 'shards' is object \{\}, expected a list"),
        (lambda m: m["shards"].__setitem__(0, "x"), r"key 'shards\[0\]' is string, expected an object"),
        (lambda m: m["shards"][1].update(num_images=True), r"key 'shards\[1\].num_images' is boolean True, expected"),
        (lambda m: m["shards"][1].update(file="../x.h5"), r"key 'shards\[1\].file' is '../x.h5', expected a file"),
    ],
    ids=["format", "sha256", "num_shards", "complete", "dim", "shards", "shard", "num_images", "file"],
)
def test_metadata_of_the_wrong_shape_is_refused_by_every_reader(cache_copy, change, message):
    edit_json(cache_copy / cache.METADATA, change)
    for read in (cache.read_metadata, cache.load_cache, cache.finished_shards, split.verify):
        with pytest.raises(BadInput, match=rf"metadata.json: {message}"):
            read(cache_copy)


def test_metadata_that_is_not_a_json_object_is_refused(cache_copy):
    (cache_copy / cache.METADATA).write_text("[1, 2]")
    with pytest.raises(BadInput, match=r"metadata.json: expected a JSON object, found array"):
        cache.load_cache(cache_copy)
    (cache_copy / cache.METADATA).write_bytes(b'{"format": "\xff"}')
    with pytest.raises(BadInput, match=r"metadata.json: not UTF-8 text at byte 12"):
        cache.load_cache(cache_copy)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{oops", r"splits.json: not valid JSON"),
        ("[]", r"splits.json: expected a JSON object of image id lists, found array"),
        ('{"train": [], "val": []}', r"splits.json: key 'test' missing; expected a list of image ids"),
        ('{"train": "img0001", "val": [], "test": []}', r"splits.json: key 'train' is string, expected a list of"),
        ('{"train": [], "val": ["a", 7], "test": []}', r"splits.json: key 'val' item 1 is number 7, expected an image"),
        ('{"train": [], "val": [], "test": [], "tuning": {}}', r"splits.json: key 'tuning' is object, expected a list"),
    ],
)
def test_splits_of_the_wrong_shape_are_refused(cache_copy, text, message):
    (cache_copy / cache.SPLITS).write_text(text)
    with pytest.raises(BadInput, match=message):
        cache.read_splits(cache_copy)
    with pytest.raises(BadInput, match=message):
        load_splits(cache_copy, ["train"])


def test_load_splits_refuses_a_leaking_split_file(cache_copy):
    splits = json.loads((cache_copy / cache.SPLITS).read_text())
    edit_json(cache_copy / cache.SPLITS, lambda s: s["train"].append(splits["val"][0]))
    with pytest.raises(BadInput, match=rf"splits.json: the split is not leak-free: image {splits['val'][0]} is in bo"):
        load_splits(cache_copy, ["test"])
    (cache_copy / cache.SPLITS).write_text(json.dumps({**splits, "tuning": splits["tuning"] + splits["test"][:2]}))
    with pytest.raises(BadInput, match=r"splits.json: the split is not leak-free: tuning images not in train: \["):
        load_splits(cache_copy, ["tuning", "val"])


def test_load_splits_refuses_ids_the_cache_lacks(cache_copy):
    splits = json.loads((cache_copy / cache.SPLITS).read_text())
    ghosts = [f"ghost{i}" for i in range(7)]
    (cache_copy / cache.SPLITS).write_text(json.dumps({**splits, "test": ghosts}))
    message = r"splits.json: split 'test' names 7 ids: \['ghost0', .*'ghost4'\] \.\.\. not in the cache"
    with pytest.raises(BadInput, match=message):
        load_splits(cache_copy, ["test"])
    (cache_copy / cache.SPLITS).write_text(json.dumps({**splits, "val": splits["val"][1:] + ["ghost"]}))
    with pytest.raises(BadInput, match=r"split 'val' names 1 ids: \['ghost'\] not in the cache"):
        load_splits(cache_copy, ["train", "val"])


def test_hashing_shows_progress_only_for_large_caches(cache_copy, monkeypatch):
    shown = []

    def recording_tqdm(**options):
        shown.append(options["disable"])
        return real_tqdm(**{**options, "disable": True})

    real_tqdm = cache_checks.tqdm
    monkeypatch.setattr(cache_checks, "tqdm", recording_tqdm)
    cache.load_cache(cache_copy)
    monkeypatch.setattr(cache_checks, "HASH_PROGRESS_BYTES", 1000)
    cache.load_cache(cache_copy)
    assert shown == [True, None]  # None: a bar on a terminal
