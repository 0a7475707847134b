"""`xalign encode --dataset webdataset`: img2dataset tars of the demo's scenes read in place, the same cache as the
images as a folder, one cache shard per tar (resumed and shared out by tar), bad tars refused naming tar and key."""

import tarfile

import numpy as np
import pytest
from dataset_files import add_member, webdataset, write_image
from test_encode_runs import MINILM, shard_contents

from encoding import cache
from encoding.commands import encode
from encoding.datasets import open_image
from encoding.datasets import webdataset as wds
from encoding.errors import BadInput


def encode_argv(dataset: str, root, out, *extra) -> list[str]:
    return [
        *("--dataset", dataset, "--root", str(root), "--out", str(out)),
        *("--image-model", "timm:resnet18", "--image-size", "32", "--text-model", MINILM),
        *("--batch-size", "3", "--num-workers", "0", *extra),
    ]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return webdataset(tmp_path_factory.mktemp("wds"))


@pytest.fixture(scope="module")
def encoded(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("wds-cache") / "cache"
    assert encode.main(encode_argv("webdataset", f"{shards[0]}/{{00000..00002}}.tar", out)) == 0
    return out


def test_expand_braces_ranges_lists_and_padding():
    assert wds.expand_braces("d/{00008..00010}.tar") == ["d/00008.tar", "d/00009.tar", "d/00010.tar"]
    assert wds.expand_braces("{a,b}/{1..2}.tar") == ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"]
    assert wds.expand_braces("plain.tar") == ["plain.tar"]


def test_tars_encode_to_the_embeddings_of_the_same_images_as_a_folder(shards, encoded, tmp_path):
    tars, images, rows = shards
    folder = tmp_path / "folder"
    assert encode.main(encode_argv("folder", images, folder, "--annotations", str(rows), "--shard-size", "4")) == 0
    meta = cache.read_metadata(encoded)
    assert meta["num_shards"] == 3 and [s["num_images"] for s in meta["shards"]] == [4, 4, 4]
    assert meta["num_captions"] == 16 and meta["skipped"] == []  # 12 txt captions + 4 second captions from json
    for got, want in zip(shard_contents(encoded), shard_contents(folder), strict=True):
        assert list(got["images/ids"]) == list(want["images/ids"])
        np.testing.assert_array_equal(got["images/embeddings"], want["images/embeddings"])
        assert list(got["captions/text"]) == list(want["captions/text"])
        np.testing.assert_array_equal(got["captions/embeddings"], want["captions/embeddings"])
    arrays = cache.load_cache(encoded)
    assert all(path.startswith("tar://") for path in arrays.image_paths)
    assert open_image(arrays.image_paths[5]).size == (64, 64)  # the stored path opens the image in place


def test_a_rerun_reads_only_the_unfinished_tars(shards, encoded, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    root = f"{shards[0]}/*.tar"
    write_shard = cache.write_shard

    def fail_after_the_first(out_dir, index, data, **kwargs):
        if index > 0:
            raise KeyboardInterrupt
        return write_shard(out_dir, index, data, **kwargs)

    monkeypatch.setattr(cache, "write_shard", fail_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        encode.main(encode_argv("webdataset", root, out))
    monkeypatch.setattr(cache, "write_shard", write_shard)
    read, read_member = [], wds._read_member
    monkeypatch.setattr(wds, "_read_member", lambda tar, *a: read.append(tar) or read_member(tar, *a))
    assert encode.main(encode_argv("webdataset", root, out)) == 0
    assert sorted({tar.rsplit("/", 1)[1] for tar in read}) == ["00001.tar", "00002.tar"]
    got = [s["sha256"] for s in cache.read_metadata(out)["shards"]]
    assert got == [s["sha256"] for s in cache.read_metadata(encoded)["shards"]]


def test_an_unreadable_image_is_skipped_and_listed_and_unread_members_named(tmp_path, caplog):
    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as tar:
        for key in ("a", "b"):
            add_member(tar, f"{key}.txt", b"a caption")
        add_member(tar, "a.jpg", write_image(tmp_path / "a.jpg", 0).read_bytes())
        add_member(tar, "b.jpg", b"not an image")
        add_member(tar, "b.npy", b"features")
    out = tmp_path / "cache"
    assert encode.main(encode_argv("webdataset", path, out)) == 0
    meta = cache.read_metadata(out)
    assert meta["num_images"] == 1 and [s["image_id"] for s in meta["skipped"]] == ["b"]
    assert "UnidentifiedImageError" in meta["skipped"][0]["reason"]
    assert "members with extensions ['npy'] are not read" in caplog.text


def write_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            add_member(tar, name, data)
    return path


def test_bad_tars_are_refused_naming_the_tar_and_key(tmp_path):
    image = write_image(tmp_path / "x.png", 1).read_bytes()
    no_caption = write_tar(tmp_path / "no_caption.tar", {"k1.png": image, "k1.json": b"{}"})
    with pytest.raises(BadInput, match=r"no_caption.tar: sample 'k1' has no caption"):
        wds.read_webdataset(no_caption)
    no_image = write_tar(tmp_path / "no_image.tar", {"k2.txt": b"words"})
    with pytest.raises(BadInput, match=r"no_image.tar: sample 'k2' has no image"):
        wds.read_webdataset(no_image)
    whole = write_tar(tmp_path / "whole.tar", {"k3.png": image, "k3.txt": b"words", "k4.png": image, "k4.txt": b"w"})
    data = whole.read_bytes()
    for cut, name in ((len(data) // 2, "mid.tar"), (data.index(b"k4.png") + 512 + len(image) // 2, "end.tar")):
        (tmp_path / name).write_bytes(data[:cut])
        with pytest.raises(BadInput, match=rf"{name}: not a readable tar .*truncated"):
            wds.read_webdataset(tmp_path / name)
    boundary = tmp_path / "boundary.tar"  # cut right after a member: no end-of-archive marker
    boundary.write_bytes(data[: data.index(b"k4.png")])
    with pytest.raises(BadInput, match=r"boundary.tar: not a readable tar \(no end-of-archive marker\)"):
        wds.read_webdataset(boundary)
    for name in ("00000.tar", "00001.tar"):
        write_tar(tmp_path / name, {"k5.png": image, "k5.txt": b"words"} if name == "00000.tar" else {})
    with pytest.raises(BadInput, match=r"00002.tar: no such tar \(1 of the 3 files --root .*\{00000..00002\}.tar"):
        wds.read_webdataset(tmp_path / "{00000..00002}.tar")
    with pytest.raises(BadInput, match=r"matches no file"):
        wds.read_webdataset(tmp_path / "nothing-*.tar")
    again = write_tar(tmp_path / "again.tar", {"k3.png": image, "k3.txt": b"words"})
    with pytest.raises(BadInput, match=rf"whole.tar: sample 'k3' is also in {again}"):
        wds.read_webdataset(tmp_path / "{again,whole}.tar")


def test_the_cli_refuses_a_missing_tar_with_exit_2(tmp_path, capsys):
    from pipeline import cli

    code = cli.main(["encode", *encode_argv("webdataset", tmp_path / "{0..1}.tar", tmp_path / "out")])
    assert code == 2 and "0.tar: no such tar (2 of the 2 files" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metadata.json").exists()


def test_a_changed_tar_is_named_when_its_image_is_read(shards, encoded):
    path = cache.load_cache(encoded).image_paths[0]
    tar, _, rest = path.removeprefix("tar://").partition("@")
    offset, size = rest.split("#")[0].split(":")
    with pytest.raises(ValueError, match="the tar changed"):
        open_image(f"tar://{tar}@{int(offset) + 512}:{size}#x.png")


@pytest.mark.slow
def test_torchrun_ranks_share_the_tars(shards, encoded, tmp_path):
    """Two ranks encode tars 0, 2 and 1 (one cache shard per tar): the same cache as one process."""
    import os
    import subprocess
    import sys

    from test_encode_torchrun import _free_port

    out = tmp_path / "ranks"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(_free_port()), "-m", "pipeline.cli", "encode"]
    command += encode_argv("webdataset", f"{shards[0]}/{{00000..00002}}.tar", out)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = [s["sha256"] for s in cache.read_metadata(out)["shards"]]
    assert got == [s["sha256"] for s in cache.read_metadata(encoded)["shards"]]
