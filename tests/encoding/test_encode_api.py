"""The library API of `xalign encode`: `EncodeRequest` mirrors the command line, `encode_cache` runs it,
and `dataset_options` reach the reader and the cache header."""

import dataclasses

import pytest

from encoding import cache
from encoding.commands import encode as encode_command
from encoding.datasets.demo import build_demo, read_demo
from encoding.encode import EncodeRequest, default_num_workers, encode_cache, summary
from encoding.errors import BadInput

MINILM = "st:sentence-transformers/all-MiniLM-L6-v2"


def demo_request(tmp_path, **changes) -> EncodeRequest:
    request = EncodeRequest(
        dataset="demo",
        root=tmp_path / "data",
        out=tmp_path / "cache",
        image_model="timm:resnet18",
        image_size=32,
        text_model=MINILM,
        shard_size=25,
        batch_size=32,
        num_workers=0,
    )
    return dataclasses.replace(request, **changes)


def test_request_has_a_field_per_flag_with_the_command_lines_defaults():
    parser = encode_command.build_parser()
    flags = {action.dest for action in parser._actions if action.dest != "help"}
    assert flags == {f.name for f in dataclasses.fields(EncodeRequest)} - {"dataset_options"}
    argv = ["--dataset", "demo", "--root", "r", "--image-model", "timm:resnet18", "--text-model", MINILM, "--out", "o"]
    request = EncodeRequest(**vars(parser.parse_args(argv)))
    assert (request.batch_size, request.shard_size, request.device, request.precision) == (256, 10000, "auto", "auto")
    assert (request.dtype, request.pairs, request.limit, request.image_size) == ("float16", False, None, None)
    assert request.num_workers == default_num_workers() and request.dataset_options == {}
    assert request.header()["dataset"] == {
        "kind": "demo",
        "root": str(request.root.resolve()),
        "annotations": None,
        "limit": None,
    }


def test_request_refuses_bad_sizes_and_reserved_options(tmp_path):
    with pytest.raises(BadInput, match=r"--batch-size must be >= 1"):
        demo_request(tmp_path, batch_size=0)
    with pytest.raises(BadInput, match=r"dataset_options \['limit'\]: these are EncodeRequest fields"):
        demo_request(tmp_path, dataset_options={"limit": 3})


def test_encode_cache_passes_dataset_options_to_the_reader_and_records_them(tmp_path):
    meta = encode_cache(demo_request(tmp_path, dataset_options={"num_images": 60}))
    assert meta == cache.read_metadata(tmp_path / "cache")
    assert meta["complete"] and meta["num_images"] == 60 and meta["num_shards"] == 3
    assert meta["dataset"]["num_images"] == 60
    assert summary(tmp_path / "cache", meta) == f"{tmp_path / 'cache'}: 60 images, 300 captions, 0 skipped (complete)"
    assert encode_cache(demo_request(tmp_path, dataset_options={"num_images": 60}))["shards"] == meta["shards"]
    with pytest.raises(BadInput, match=r"this cache was built with dataset\.num_images=60, not 80"):
        encode_cache(demo_request(tmp_path, dataset_options={"num_images": 80}))
    with pytest.raises(BadInput, match=r"built with dataset\.num_images=60, not null"):
        encode_cache(demo_request(tmp_path))


def test_reader_options_are_checked(tmp_path):
    with pytest.raises(BadInput, match=r"dataset 'folder' takes no option \['num_images'\]"):
        encode_cache(dataclasses.replace(demo_request(tmp_path), dataset="folder", dataset_options={"num_images": 5}))
    assert not (tmp_path / "cache").exists()


def test_demo_root_with_another_number_of_scenes_is_refused(tmp_path):
    build_demo(tmp_path, num_images=12)
    assert len(read_demo(tmp_path)) == 12 == len(read_demo(tmp_path, num_images=12))
    with pytest.raises(BadInput, match=r"holds 12 demo scenes, not num_images=20; use another --root"):
        read_demo(tmp_path, num_images=20)
