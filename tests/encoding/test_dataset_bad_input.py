"""Dataset readers refuse bad annotation files with `BadInput` naming the file (and line or key), never a raw
KeyError, TypeError or UnicodeDecodeError; malformed JSONL rows are skipped and reported like invalid JSON."""

import json

import dataset_files
import pytest

from encoding.datasets import read_dataset
from encoding.datasets.demo import build_demo
from encoding.errors import BadInput


def test_files_that_are_not_utf8_name_the_file_and_byte(tmp_path):
    root, csv_file, jsonl = dataset_files.folder(tmp_path)
    csv_file.write_bytes(b"image,caption\nsub/p0.png,caf\xe9\n")
    with pytest.raises(BadInput, match=r"rows.csv: not UTF-8 text at byte 28 \(invalid continuation byte\)"):
        read_dataset("folder", root, csv_file)
    jsonl.write_bytes(b'{"image": "sub/p0.png", "caption": "\xff"}\n')
    with pytest.raises(BadInput, match=r"rows.jsonl: not UTF-8 text at byte 36"):
        read_dataset("folder", root, jsonl)
    folder, results = dataset_files.flickr30k(tmp_path)
    results.write_bytes(results.read_bytes() + b"x.jpg| 0| \x80\n")
    with pytest.raises(BadInput, match=r"results.csv: not UTF-8 text at byte \d+"):
        read_dataset("flickr30k", folder, results)
    images, captions = dataset_files.coco(tmp_path)
    captions.write_bytes(b'{"images": [], "annotations": [], "info": "\xc3"}')
    with pytest.raises(BadInput, match=r"captions_train2014.json: not UTF-8 text at byte 43"):
        read_dataset("coco", images, captions)
    karpathy_root, karpathy_file = dataset_files.karpathy(tmp_path)
    karpathy_file.write_bytes(b"\xfe\xff")
    with pytest.raises(BadInput, match=r"dataset_coco.json: not UTF-8 text at byte 0"):
        read_dataset("karpathy", karpathy_root, karpathy_file)


def test_jsonl_lines_that_are_not_objects_are_skipped_like_invalid_json(tmp_path):
    root, _, jsonl = dataset_files.folder(tmp_path)
    extra = ["[1, 2]", "7", '"sub/p0.png"', "null", '{"image": 5, "caption": "x"}', '{"image": "a.png", "caption": []}']
    jsonl.write_text(jsonl.read_text() + "\n".join(extra) + "\n")
    skipped = []
    records = read_dataset("folder", root, jsonl, skipped=skipped)
    assert [len(r.captions) for r in records] == [2, 2, 2]
    reasons = {s["path"].rsplit(":", 1)[1]: s["reason"] for s in skipped}
    assert sorted(reasons, key=int) == ["7", "8", "9", "10", "11", "12", "13"]
    assert "_error" in reasons["7"] and "expected a JSON object, found array" in reasons["8"]
    assert "found number" in reasons["9"] and "found string" in reasons["10"] and "found null" in reasons["11"]
    assert reasons["12"].startswith("row needs one of ('image', 'image_path', 'path', 'file_name')")


@pytest.mark.parametrize(
    "which, label, shown",
    [("csv", "three", "'three'"), ("csv", "1.5", "'1.5'"), ("jsonl", 1.5, "1.5"), ("jsonl", True, "True")],
)
def test_a_label_that_is_not_an_integer_names_file_line_and_value(tmp_path, which, label, shown):
    root, csv_file, jsonl = dataset_files.folder(tmp_path)
    if which == "csv":
        csv_file.write_text(f"image,caption,label\nsub/p0.png,a dog,0\nsub/p1.png,a cat,{label}\n")
        file, line = csv_file, 3
    else:
        rows = [
            {"image": "sub/p0.png", "caption": "a dog", "label": 0},
            {"image": "p1.png", "caption": "x", "label": label},
        ]
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        file, line = jsonl, 2
    with pytest.raises(BadInput, match=rf"{file.name}:{line}: label {shown} is not an integer"):
        read_dataset("folder", root, file)


def test_a_split_that_is_not_a_string_and_an_unparsable_csv_are_refused(tmp_path):
    root, csv_file, jsonl = dataset_files.folder(tmp_path)
    jsonl.write_text(json.dumps({"image": "sub/p0.png", "caption": "a dog", "split": 3}) + "\n")
    with pytest.raises(BadInput, match=r"rows.jsonl:1: split 3 is not a string"):
        read_dataset("folder", root, jsonl)
    csv_file.write_text('image,caption\nsub/p0.png,"' + "x" * 200_000 + '"\n')
    with pytest.raises(BadInput, match=r"rows.csv:\d+: not valid CSV \(field larger than field limit"):
        read_dataset("folder", root, csv_file)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.update(images={}), r"key 'images' is object, expected a list of objects"),
        (lambda p: p["annotations"].__setitem__(1, 3), r"key 'annotations\[1\]' is number, expected an object"),
        (lambda p: p["annotations"][1].pop("caption"), r"key 'annotations\[1\].caption' missing; expected a string"),
        (lambda p: p["annotations"][0].update(image_id=None), r"key 'annotations\[0\].image_id' is null, expected an"),
        (lambda p: p["images"][2].update(file_name=5), r"key 'images\[2\].file_name' is number 5, expected a string"),
        (lambda p: p["images"][0].update(id=[1]), r"key 'images\[0\].id' is array \[1\], expected an integer or a"),
    ],
    ids=["images", "annotation", "caption", "image_id", "file_name", "id"],
)
def test_coco_json_of_the_wrong_shape_names_file_and_key(tmp_path, change, message):
    images, captions = dataset_files.coco(tmp_path)
    payload = json.loads(captions.read_text())
    change(payload)
    captions.write_text(json.dumps(payload))
    with pytest.raises(BadInput, match=rf"captions_train2014.json: {message}"):
        read_dataset("coco", images, captions)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.update(images="x"), r"key 'images' is string, expected a list of objects"),
        (lambda p: p["images"][1].pop("filename"), r"key 'images\[1\].filename' missing; expected a string"),
        (lambda p: p["images"][1].update(sentences="a cat"), r"key 'images\[1\].sentences' is string 'a cat', exp"),
        (lambda p: p["images"][2]["sentences"][0].pop("raw"), r"key 'images\[2\].sentences\[0\].raw' missing"),
        (lambda p: p["images"][0].update(split=["train"]), r"key 'images\[0\].split' is array \['train'\], exp"),
    ],
    ids=["images", "filename", "sentences", "raw", "split"],
)
def test_karpathy_json_of_the_wrong_shape_names_file_and_key(tmp_path, change, message):
    root, annotations = dataset_files.karpathy(tmp_path)
    payload = json.loads(annotations.read_text())
    change(payload)
    annotations.write_text(json.dumps(payload))
    with pytest.raises(BadInput, match=rf"dataset_coco.json: {message}"):
        read_dataset("karpathy", root, annotations)


def test_a_damaged_demo_captions_file_names_file_and_line(tmp_path):
    build_demo(tmp_path, num_images=3)
    captions = tmp_path / "captions.jsonl"
    lines = captions.read_text().splitlines()
    captions.write_text("\n".join([lines[0], "{oops", lines[2]]) + "\n")
    with pytest.raises(BadInput, match=r"captions.jsonl:2: not valid JSON .*; delete .* to rebuild the demo data"):
        read_dataset("demo", tmp_path)
    captions.write_text("\n".join([lines[0], "[]", lines[2]]) + "\n")
    with pytest.raises(BadInput, match=r"captions.jsonl:2: expected an object with \['image_id', 'path', 'capt"):
        read_dataset("demo", tmp_path)
