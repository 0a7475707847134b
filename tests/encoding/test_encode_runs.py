"""`xalign encode` end to end: stored embeddings, skipped images, refusal, kill -9 and resume, torchrun, inspect."""

import json

import h5py
import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F
from dataset_files import caption, write_corrupt, write_image
from PIL import Image

from encoding import cache
from encoding.commands import encode
from encoding.commands import inspect as inspect_command
from pipeline import cli

MINILM = "st:sentence-transformers/all-MiniLM-L6-v2"


def folder_dataset(root, n: int, corrupt: bool = False):
    """(root, rows.jsonl) of n images with 1-3 captions each; optionally a truncated, a text and a missing file."""
    rows = []
    for i in range(n):
        write_image(root / f"im{i:03d}.png", i, size=(24 + i % 5, 20))
        rows += [{"image": f"im{i:03d}.png", "caption": caption(i, k)} for k in range(1 + i % 3)]
    if corrupt:
        write_corrupt(root / "bad_truncated.jpg", "truncated")
        write_corrupt(root / "bad_text.jpg", "text")
        rows += [
            {"image": name, "caption": "lost"} for name in ("bad_truncated.jpg", "bad_text.jpg", "bad_missing.jpg")
        ]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, root / "rows.jsonl"


def argv(root, rows, out, *extra, shard_size=4):
    return [
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--annotations",
        str(rows),
        "--out",
        str(out),
        "--image-model",
        "timm:resnet18",
        "--image-size",
        "32",
        "--text-model",
        MINILM,
        "--shard-size",
        str(shard_size),
        "--batch-size",
        "3",
        "--num-workers",
        "0",
        *extra,
    ]


def shard_contents(out) -> list[dict]:
    """Every shard's arrays, by name, in shard order."""
    contents = []
    for shard in cache.read_metadata(out)["shards"]:
        with h5py.File(out / shard["file"]) as f:
            contents.append(
                {
                    name: f[name][()]
                    for name in (
                        "images/ids",
                        "images/embeddings",
                        "captions/text",
                        "captions/embeddings",
                        "captions/image_ids",
                    )
                }
            )
    return contents


def assert_same_cache(a, b, exact=True):
    meta_a, meta_b = cache.read_metadata(a), cache.read_metadata(b)
    assert meta_a["complete"] and meta_b["complete"]
    assert meta_a["skipped"] == meta_b["skipped"]
    if exact:  # shard files are byte-deterministic
        assert [s["sha256"] for s in meta_a["shards"]] == [s["sha256"] for s in meta_b["shards"]]
    for x, y in zip(shard_contents(a), shard_contents(b), strict=True):
        for name in x:
            if "embeddings" in name:
                np.testing.assert_allclose(x[name].astype(np.float32), y[name].astype(np.float32), atol=2e-3)
            else:
                assert list(x[name]) == list(y[name])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return folder_dataset(tmp_path_factory.mktemp("folder"), 10, corrupt=True)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("ref") / "cache"
    assert encode.main(argv(*dataset, out)) == 0
    return out


def test_corrupt_images_are_skipped_with_reason_and_captions_left_out(reference):
    meta = cache.read_metadata(reference)
    assert meta["complete"] and meta["num_images"] == 10 and meta["num_shards"] == 4
    reasons = {s["image_id"]: s["reason"] for s in meta["skipped"]}
    assert set(reasons) == {"bad_truncated", "bad_text", "bad_missing"}
    assert "cannot identify image file" in reasons["bad_text"] and "No such file" in reasons["bad_missing"]
    assert "truncated" in reasons["bad_truncated"] or "OSError" in reasons["bad_truncated"]
    arrays = cache.load_cache(reference)
    assert "lost" not in set(arrays.caption_text) and len(arrays.caption_text) == meta["num_captions"] == 19
    assert arrays.image_embeddings.dtype == np.float32  # read as float32 from float16 storage
    with h5py.File(reference / "shard-00000.h5") as f:
        assert f["images/embeddings"].dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(arrays.image_embeddings, axis=1), 1, atol=2e-3)
    assert meta["text_model"]["prefix"] == "" and meta["image_model"]["preprocess"]["input_size"] == [3, 32, 32]


def test_rerun_with_other_spec_dataset_or_plan_is_refused_with_exit_2(dataset, reference, capsys):
    root, rows = dataset
    for change in (
        ["--text-model", "st:other"],
        ["--dataset", "coco"],
        ["--shard-size", "5"],
        ["--image-model", "timm:resnet34"],
    ):
        args = argv(root, rows, reference)
        args[args.index(change[0]) + 1] = change[1]
        assert cli.main(["encode", *args]) == 2
        assert f"cache was built with {change[0][2:].replace('-', '_')}" in capsys.readouterr().err
    assert cli.main(["encode", *argv(root, rows, reference, "--text-prefix", "query: ")]) == 2
    assert "cache was built with text_model.prefix=" in capsys.readouterr().err  # part of the text model
    assert cli.main(["encode", *argv(root, rows, reference)]) == 0  # the same command: nothing to do


def test_inspect_verifies_every_shard(reference, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    assert inspect_command.main([str(copy)]) == 0
    out = capsys.readouterr().out
    assert "4/4 verified (sha256)" in out and "bad_text" in out
    data = bytearray((copy / "shard-00002.h5").read_bytes())
    data[-10] ^= 0xFF
    (copy / "shard-00002.h5").write_bytes(bytes(data))
    assert inspect_command.main([str(copy)]) == 1
    assert "CORRUPT: " in (out := capsys.readouterr().out) and "shard-00002.h5: sha256 differs" in out


def test_stored_embeddings_equal_the_library_call_for_hf_towers_and_prefix(tmp_path):
    import transformers as tf

    path = tiny_models.hf_model(tmp_path / "clip", "clip")
    root, rows = folder_dataset(tmp_path / "data", 5)
    out = tmp_path / "cache"
    args = argv(root, rows, out, "--dtype", "float32", "--text-prefix", "a ")
    args[args.index("--image-model") + 1], args[args.index("--text-model") + 1] = f"hf:{path}", f"hf:{path}"
    args.remove("--image-size"), args.remove("32")
    assert encode.main(args) == 0
    arrays = cache.load_cache(out)
    model = tf.AutoModel.from_pretrained(path).eval()
    processor, tokenizer = tf.AutoImageProcessor.from_pretrained(path), tf.AutoTokenizer.from_pretrained(path)
    pictures = [Image.open(p).convert("RGB") for p in arrays.image_paths]
    texts = ["a " + t for t in arrays.caption_text]
    with torch.no_grad():
        image_embeds = model(
            **processor(images=pictures, return_tensors="pt"), **tokenizer(texts[:1], return_tensors="pt")
        ).image_embeds
        text_embeds = F.normalize(
            model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt")).pooler_output, dim=-1
        )
    np.testing.assert_allclose(arrays.image_embeddings, image_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(arrays.caption_embeddings, text_embeds.numpy(), atol=1e-5)
    assert not any(t.startswith("a a ") for t in arrays.caption_text)  # the stored text has no prefix
    assert cache.read_metadata(out)["text_model"]["prefix"] == "a "
