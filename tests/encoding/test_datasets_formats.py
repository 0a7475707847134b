"""Dataset readers on generated files in each real format, and their errors."""

import json

import dataset_files
import numpy as np
import pytest

from encoding.datasets import open_image, read_dataset
from encoding.errors import BadInput
from pipeline import cli


def test_coco_keeps_every_caption_and_records_the_split(tmp_path):
    root, annotations = dataset_files.coco(tmp_path)
    skipped = []
    records = read_dataset("coco", root, annotations, skipped=skipped)
    by_id = {r.image_id: r for r in records}
    assert sorted(by_id) == sorted(["9", "25", "30", "34", "36", "49"])
    assert len(by_id["25"].captions) == 7 and len(by_id["30"].captions) == 6
    assert by_id["9"].captions[0] == dataset_files.caption(9, 0)  # stripped
    assert {r.split for r in records} == {"train"}
    assert by_id["9"].path == str(root / "COCO_train2014_000000000009.jpg")
    assert skipped == [
        {
            "image_id": "42",
            "path": str(root / "COCO_train2014_000000000042.jpg"),
            "reason": "no captions in the annotation file",
        }
    ]
    _, val = dataset_files.coco(tmp_path / "v", year="2017", split="val")
    assert {r.split for r in read_dataset("coco", val.parent.parent / "val2017", val, skipped=[])} == {"val"}


def test_karpathy_records_split_and_ids(tmp_path):
    root, annotations = dataset_files.karpathy(tmp_path, "coco")
    records = read_dataset("karpathy", root, annotations)
    assert [r.image_id for r in records] == [str(1000 + i) for i in range(6)]
    assert [r.split for r in records] == ["train", "restval", "val", "test", "train", "test"]
    assert records[1].path == str(root / "val2014" / "COCO_val2014_000000001001.jpg")
    assert open_image(records[1].path).size == (40, 30)
    root, annotations = dataset_files.karpathy(tmp_path, "flickr30k")
    records = read_dataset("karpathy", root, annotations)
    assert records[0].image_id == "5000" and records[0].path == str(root / "5000.jpg")
    assert len(records[0].captions) == 5


def test_flickr30k_skips_and_lists_the_malformed_row(tmp_path):
    root, results = dataset_files.flickr30k(tmp_path)
    skipped = []
    records = read_dataset("flickr30k", root, None, skipped=skipped)  # results.csv found next to the folder
    assert [r.image_id for r in records] == [str(1000092795 + i) for i in range(4)]
    assert [len(r.captions) for r in records] == [5, 5, 4, 5]
    assert records[0].captions[1] == dataset_files.caption(0, 1)
    assert len(skipped) == 1 and skipped[0]["path"] == f"{results}:16"
    assert skipped[0]["reason"].startswith("malformed row: '1000092797.jpg| 4 ")


def test_cifar100_reads_pickles_with_labels_and_splits(tmp_path):
    root = dataset_files.cifar100(tmp_path)
    records = read_dataset("cifar100", root)
    assert len(records) == 30 and {r.split for r in records} == {"train", "test"}
    train = [r for r in records if r.split == "train"]
    import pickle

    payload = pickle.loads((root / "train").read_bytes())
    label = payload[b"fine_labels"][3]
    assert train[3].image_id == "train-00003" and train[3].label == label
    assert train[3].captions[0] == f"a photo of a {dataset_files.CIFAR_CLASSES[label]}."
    expected = payload[b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(open_image(train[3].path)), expected)


def test_cifar100_pairs_are_side_by_side_and_name_both_classes(tmp_path):
    root = dataset_files.cifar100(tmp_path, n_train=40)
    pairs = read_dataset("cifar100", root, pairs=True)
    assert len(pairs) == 50 and pairs == read_dataset("cifar100", root, pairs=True)  # seeded
    import pickle

    payload = pickle.loads((root / "train").read_bytes())
    labels = payload[b"fine_labels"]
    same = 0
    for record in (r for r in pairs if r.split == "train"):
        left, right = (int(i) for i in record.image_id.removeprefix("train-").split("+"))
        assert left != right and record.label == 100 * labels[left] + labels[right]
        names = dataset_files.CIFAR_CLASSES
        assert names[labels[left]] in record.captions[0] and names[labels[right]] in record.captions[0]
        same += labels[left] == labels[right]
        image = np.asarray(open_image(record.path))
        assert image.shape == (32, 64, 3)
        np.testing.assert_array_equal(image[:, 32:], payload[b"data"][right].reshape(3, 32, 32).transpose(1, 2, 0))
    assert 5 <= same <= 35  # about half the partners share the class


@pytest.mark.parametrize("which", [1, 2])
def test_folder_csv_and_jsonl(tmp_path, which):
    root, *files = dataset_files.folder(tmp_path)
    skipped = []
    records = read_dataset("folder", root, files[which - 1], skipped=skipped)
    assert [r.image_id for r in records] == ["sub/p0", "sub/p1", "sub/p2"]
    assert [r.label for r in records] == [0, 1, 2] and all(len(r.captions) == 2 for r in records)
    assert records[2].path == str(root / "sub" / "p2.png")
    assert len(skipped) == 1 and skipped[0]["path"].endswith(":8" if which == 1 else ":7")


def test_bad_annotation_files_name_the_file(tmp_path):
    bad = tmp_path / "captions_train2014.json"
    bad.write_text("{oops")
    with pytest.raises(BadInput, match=r"captions_train2014.json: not valid JSON"):
        read_dataset("coco", tmp_path, bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(BadInput, match=r"missing key\(s\) \['annotations'\]"):
        read_dataset("coco", tmp_path, bad)
    (tmp_path / "results.csv").write_text("name,caption\n")
    with pytest.raises(BadInput, match=r"results.csv: first line must be the header"):
        read_dataset("flickr30k", tmp_path, tmp_path / "results.csv")
    with pytest.raises(BadInput, match=r"unknown captions format '.txt'"):
        (tmp_path / "rows.txt").write_text("")
        read_dataset("folder", tmp_path, tmp_path / "rows.txt")
    with pytest.raises(BadInput, match=r"unknown dataset 'imagenet'; choose one of: cifar100, coco, demo"):
        read_dataset("imagenet", tmp_path)


@pytest.mark.parametrize("kind", ["coco", "karpathy", "flickr30k", "cifar100", "folder"])
def test_missing_root_or_annotations_exit_2_at_once(tmp_path, kind, capsys):
    argv = [
        "encode",
        "--dataset",
        kind,
        "--image-model",
        "timm:resnet18",
        "--text-model",
        "st:nonexistent",
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main([*argv, "--root", str(tmp_path / "nowhere"), "--annotations", str(tmp_path / "a.json")]) == 2
    assert "not found (expected a directory)" in capsys.readouterr().err
    if kind != "cifar100":
        assert cli.main([*argv, "--root", str(tmp_path), "--annotations", str(tmp_path / "none.json")]) == 2
        assert "none.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _encode(tmp_path, *args):
    out = tmp_path / "cache"
    common = [
        "--out",
        str(out),
        "--image-model",
        "timm:resnet18",
        "--image-size",
        "32",
        "--text-model",
        "st:sentence-transformers/all-MiniLM-L6-v2",
        "--shard-size",
        "8",
        "--num-workers",
        "0",
    ]
    assert cli.main(["encode", *common, *args]) == 0  # later flags win
    return out


def test_karpathy_cache_splits_predefined_with_restval_as_train(tmp_path):
    import json as json_module

    from encoding import cache

    root, annotations = dataset_files.karpathy(tmp_path, "coco")
    out = _encode(tmp_path, "--dataset", "karpathy", "--root", str(root), "--annotations", str(annotations))
    assert cli.main(["split", str(out), "--predefined"]) == 0
    splits = json_module.loads((out / cache.SPLITS).read_text())
    assert splits["train"] == ["1000", "1001", "1004"] and splits["val"] == ["1002"]
    assert splits["test"] == ["1003", "1005"]


def test_cifar100_pairs_cache_stores_labels(tmp_path):
    import h5py

    from encoding import cache

    root = dataset_files.cifar100(tmp_path, n_train=6, n_test=4)
    out = _encode(tmp_path, "--dataset", "cifar100", "--root", str(root), "--pairs", "--num-workers", "2")
    meta = cache.read_metadata(out)
    assert meta["complete"] and meta["num_images"] == 10 and meta["num_captions"] == 30
    assert meta["dataset"]["pairs"] is True
    arrays = cache.load_cache(out)
    expected = {r.image_id: r.label for r in read_dataset("cifar100", root, pairs=True)}
    assert list(arrays.image_labels) == [expected[i] for i in arrays.image_ids]
    with h5py.File(out / "shard-00000.h5") as f:
        assert f["images/labels"].dtype == np.int64 and len(f["images/labels"]) == 8
    assert set(arrays.image_splits) == {"train", "test"}
