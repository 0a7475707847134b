"""Hostile inputs end within seconds in exit code 2 naming the file, key or variable, never in a hang, a
traceback, a MemoryError or a message the size of the input: torchrun environments no launcher set,
YAML and JSON bombs, captions an HDF5 cache cannot store, a scratch text tower of a billion positions."""

import datetime
import json
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from encoding import runtime
from encoding.backbones.text_architecture import resolve_text_architecture
from encoding.backbones.text_encoder import build_text_encoder
from encoding.datasets import read_dataset
from encoding.errors import BadInput
from encoding.safe_load import load_json, parse_yaml, shown
from pipeline import cli
from pipeline.evaluation.zeroshot import load_class_names, load_templates

sys.path.insert(0, str(Path(__file__).parent / "encoding"))
import dataset_files  # noqa: E402

TORCHRUN = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)  # about 800 bytes standing for 9**9 strings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exit_2(argv: list[str], capsys, message: str, seconds: float = 10) -> str:
    """Run `xalign argv`; assert exit 2 within `seconds`, a short message matching `message`, no traceback."""
    start = time.perf_counter()
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert time.perf_counter() - start < seconds
    assert "Traceback" not in err and len(err) < 2000, err[-2000:]
    assert message in err, err
    return err


def _config(path: Path, text: str = "") -> str:
    path.write_text("name: r\ndata: {cache: nowhere}\ntraining: {device: cpu}\n" + text)
    return str(path)


# --- case 5: torchrun environments ---------------------------------------------------------------


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


COMPLETE = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
ENVIRONMENTS = [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 without RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT"),
    ({"RANK": "abc"}, "RANK='abc' is not an integer"),
    ({"LOCAL_RANK": "x"}, "LOCAL_RANK='x' is not an integer"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0; expected 1 <= WORLD_SIZE"),
    ({**COMPLETE, "RANK": "2"}, "RANK=2; expected 0 <= RANK < WORLD_SIZE (2)"),
    ({"RANK": "1"}, "RANK=1; expected 0 <= RANK < WORLD_SIZE (1)"),
    ({**COMPLETE, "MASTER_PORT": "99999"}, "MASTER_PORT=99999"),
    ({**COMPLETE, "LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "1"}, "LOCAL_RANK=1; expected 0 <= LOCAL_RANK < LOCAL_WORLD"),
]


@pytest.mark.parametrize("env, message", ENVIRONMENTS, ids=[m for _, m in ENVIRONMENTS])
def test_a_torchrun_environment_no_launcher_set_is_exit_2_naming_the_variable(
    env, message, no_torchrun, tmp_path, capsys
):
    for name, value in env.items():
        no_torchrun.setenv(name, value)
    no_torchrun.chdir(tmp_path)
    _exit_2(["train", _config(tmp_path / "c.yaml")], capsys, message)
    assert not (tmp_path / "results").exists()


def test_encode_with_world_size_alone_is_exit_2_before_any_model(no_torchrun, tmp_path, capsys):
    root, csv_file, _ = dataset_files.folder(tmp_path)
    no_torchrun.setenv("WORLD_SIZE", "2")
    argv = ["encode", "--dataset", "folder", "--root", str(root), "--annotations", str(csv_file), "--out", "x"]
    _exit_2([*argv, "--image-model", "timm:none", "--text-model", "st:none"], capsys, "WORLD_SIZE=2 without")


def test_a_rank_whose_peers_never_come_stops_after_the_rendezvous_timeout(no_torchrun):
    port = _free_port()
    for name, value in {**COMPLETE, "MASTER_PORT": str(port)}.items():
        no_torchrun.setenv(name, value)
    no_torchrun.setattr(runtime, "RENDEZVOUS_TIMEOUT", datetime.timedelta(seconds=2))
    start = time.perf_counter()
    with pytest.raises(BadInput, match=rf"the 2 ranks did not meet at MASTER_ADDR:MASTER_PORT 127.0.0.1:{port}"):
        runtime.distributed()
    assert time.perf_counter() - start < 30
    assert not runtime.torch.distributed.is_initialized()


# --- case 6: YAML and JSON bombs ------------------------------------------------------------------


def test_a_billion_laughs_config_is_refused_in_milliseconds(tmp_path, capsys):
    (tmp_path / "lol.yaml").write_text(LAUGHS)
    assert len(LAUGHS) < 1000
    _exit_2(
        ["train", str(tmp_path / "lol.yaml")], capsys, "lol.yaml: refused: more than 50000 values (aliases expanded)", 2
    )


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, capsys):
    (tmp_path / "deep.yaml").write_text("name: " + "[" * 500_000)
    _exit_2(["train", str(tmp_path / "deep.yaml")], capsys, "deep.yaml: refused: nested deeper than 32 levels")
    _exit_2(["train", _config(tmp_path / "c.yaml"), "--set", "model.hidden_dim=" + "[" * 5000], capsys, "--set")


def test_a_recursive_alias_is_refused(tmp_path, capsys):
    (tmp_path / "loop.yaml").write_text("training: &t {batch_size: 8, again: *t}\n")
    _exit_2(["train", str(tmp_path / "loop.yaml")], capsys, "loop.yaml: refused: alias *t is inside the node")


def test_a_file_over_the_size_limit_is_refused_naming_it(tmp_path, capsys):
    (tmp_path / "big.yaml").write_text("name: [" + "1, " * 370_000 + "1]\n")  # 1.1 MB
    _exit_2(["train", str(tmp_path / "big.yaml")], capsys, "big.yaml: larger than 1 MiB")


def test_a_long_list_under_the_size_limit_is_refused_within_seconds(tmp_path, capsys):
    (tmp_path / "long.yaml").write_text("name: [" + "1, " * 300_000 + "1]\n")  # 900 kB
    _exit_2(["train", str(tmp_path / "long.yaml")], capsys, "long.yaml: refused: more than 50000 values")


def test_a_large_value_is_shown_in_at_most_200_characters(tmp_path, capsys):
    config = _config(tmp_path / "c.yaml", "model: {hidden_dim: [" + "7, " * 40_000 + "7]}\n")
    err = _exit_2(["train", config], capsys, "config key 'model.hidden_dim': expected int, got list [7, 7, 7")
    assert len(err) < 500
    assert len(shown("x" * 10**6)) == 200 and len(shown([[[[[[1]]]]]] * 10**5)) < 200


def test_aliases_and_merge_keys_within_the_bounds_still_load():
    text = "base: &base {batch_size: 8, seed: 1}\ntraining:\n  <<: *base\n  seed: 2\n"
    assert parse_yaml(text, "c.yaml")["training"] == {"batch_size": 8, "seed": 2}


def test_an_optuna_config_bomb_is_refused_naming_it(tmp_path, capsys):
    (tmp_path / "optuna.yaml").write_text(LAUGHS)
    _exit_2(["tune", str(tmp_path / "optuna.yaml")], capsys, "optuna.yaml: refused: more than 50000 values")


def test_zero_shot_prompt_and_class_files_are_bounded(tmp_path):
    (tmp_path / "templates.yaml").write_text(LAUGHS)
    with pytest.raises(BadInput, match=r"templates\.yaml: refused: more than 50000 values"):
        load_templates(str(tmp_path / "templates.yaml"))
    (tmp_path / "classes.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadInput, match=r"classes\.json: refused: JSON nested too deeply"):
        load_class_names({}, tmp_path / "classes.json", 2)
    (tmp_path / "classes.json").write_text(json.dumps(["x" * 2**20]))
    with pytest.raises(BadInput, match=r"classes\.json: larger than 1 MiB"):
        load_class_names({}, tmp_path / "classes.json", 2)


def test_splits_and_metadata_bombs_are_exit_2_naming_the_file(synthetic_cache, capsys):
    (synthetic_cache / "splits.json").write_text("[" * 500_000)
    _exit_2(["split", str(synthetic_cache), "--verify"], capsys, "splits.json: refused: JSON nested too deeply")
    (synthetic_cache / "metadata.json").write_text('{"num_images": ' + "9" * 5000 + "}")
    _exit_2(["inspect", str(synthetic_cache)], capsys, "metadata.json: not valid JSON (Exceeds the limit")


def test_dataset_json_bombs_are_refused_or_skipped_per_row(tmp_path):
    images, captions = dataset_files.coco(tmp_path)
    captions.write_text("[" * 500_000)
    with pytest.raises(BadInput, match=r"captions_train2014\.json: refused: JSON nested too deeply"):
        read_dataset("coco", images, captions)
    root, _, jsonl = dataset_files.folder(tmp_path)
    jsonl.write_text(jsonl.read_text() + "[" * 500_000 + "\n")
    skipped = []
    assert len(read_dataset("folder", root, jsonl, skipped=skipped)) == 3
    assert any("rows.jsonl:8: refused: JSON nested too deeply" in entry["reason"] for entry in skipped)


def test_a_file_over_its_limit_is_refused_without_reading_it_whole(tmp_path):
    (tmp_path / "m.json").write_text('{"a": "' + "x" * 100 + '"}')
    with pytest.raises(BadInput, match=r"m\.json: larger than 10 bytes"):
        load_json(tmp_path / "m.json", 10)
    with pytest.raises(BadInput, match=r"/dev/zero: larger than 10 bytes"):
        load_json("/dev/zero", 10)  # endless: only the first 11 bytes are read


# --- case 7: captions an HDF5 cache cannot store ---------------------------------------------------


def _bad_caption_readers(tmp_path):
    """(kind, root, annotations) per reader, each file with one caption holding a NUL character."""
    root, csv_file, jsonl = dataset_files.folder(tmp_path / "folder")
    csv_file.write_text(csv_file.read_text().replace("sub/p1.png,", 'sub/p1.png,"nul \x00 here"\nsub/p1.png,', 1))
    rows = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join([rows[0], json.dumps({"image": "sub/p1.png", "caption": "nul \x00"}), *rows[1:]]))
    coco_images, coco_file = dataset_files.coco(tmp_path / "coco")
    payload = json.loads(coco_file.read_text())
    payload["annotations"][0]["caption"] = "nul \x00 here"
    coco_file.write_text(json.dumps(payload))
    karpathy_root, karpathy_file = dataset_files.karpathy(tmp_path / "karpathy")
    payload = json.loads(karpathy_file.read_text())
    payload["images"][0]["sentences"][0]["raw"] = "surrogate \ud800 here"
    karpathy_file.write_text(json.dumps(payload))
    flickr_images, results = dataset_files.flickr30k(tmp_path / "flickr")
    lines = results.read_text().splitlines()
    lines[1] = lines[1] + " \x00"
    results.write_text("\n".join(lines) + "\n")
    return [
        ("folder", root, csv_file),
        ("folder", root, jsonl),
        ("coco", coco_images, coco_file),
        ("karpathy", karpathy_root, karpathy_file),
        ("flickr30k", flickr_images, results),
    ]


def test_every_reader_skips_and_reports_a_caption_with_a_nul_or_a_surrogate(tmp_path):
    for kind, root, annotations in _bad_caption_readers(tmp_path):
        skipped = []
        records = read_dataset(kind, root, annotations, skipped=skipped)
        reasons = [entry["reason"] for entry in skipped if "holds" in entry["reason"]]
        assert len(reasons) == 1, (annotations, skipped)
        assert "NUL character" in reasons[0] or "unpaired surrogate" in reasons[0]
        assert all("\x00" not in c and "\ud800" not in c for r in records for c in r.captions)
        assert records, annotations


def test_an_image_id_that_cannot_be_stored_skips_the_image(tmp_path):
    images, captions = dataset_files.coco(tmp_path)
    payload = json.loads(captions.read_text())
    payload["images"][0]["id"] = "bad\x00id"
    for row in payload["annotations"]:
        row["image_id"] = "bad\x00id" if row["image_id"] == 9 else row["image_id"]
    captions.write_text(json.dumps(payload))
    skipped = []
    records = read_dataset("coco", images, captions, skipped=skipped)
    assert "bad\x00id" not in [r.image_id for r in records]
    entry = next(e for e in skipped if "image id or path" in e["reason"])
    assert entry["image_id"] == "bad\\x00id"


def test_encode_of_a_nul_caption_completes_the_cache_and_reports_the_row(tmp_path, capsys):
    from test_encode_runs import argv, folder_dataset

    root, rows = folder_dataset(tmp_path / "data", 4)
    with rows.open("a") as file:
        file.write(json.dumps({"image": "im001.png", "caption": "a NUL \x00 inside"}) + "\n")
    assert cli.main(["encode", *argv(root, rows, tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["complete"] and meta["num_images"] == 4
    assert [s["reason"] for s in meta["skipped"]] == ["caption 3 holds a NUL character at position 6"]
    assert "Traceback" not in capsys.readouterr().err


# --- case 8: a scratch text tower's max_length ---------------------------------------------------------

SCRATCH = {"library": "scratch", "arch": "clip", "tokenizer": None, "pretrained": None, "attention": "self"}


def test_a_scratch_max_length_beyond_its_positions_is_refused_at_config_load(tmp_path, capsys):
    model = {"library": "timm", "arch": "resnet18", "text": {"library": "scratch", "max_length": 1_000_000_000}}
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump({"name": "b", "data": {"cache": "nowhere"}, "model": model}))
    message = "config key 'model.text.max_length': 1000000000 is beyond scratch's 1024 positions"
    _exit_2(["backbone-train", str(config)], capsys, message)


def test_a_scratch_max_length_beyond_its_positions_is_refused_at_model_build():
    values = {**SCRATCH, "pooling": None, "max_length": 1_000_000_000, "options": {}}
    with pytest.raises(BadInput, match=r"'model.text.max_length': 1000000000 is beyond 'clip''s 1024 positions"):
        resolve_text_architecture(values, 16)
    architecture = {**values, "pooling": "eos", "output_dim": 16}  # as a crafted checkpoint would hold it
    with pytest.raises(BadInput, match=r"'model.text.max_length': 1000000000 is beyond scratch's 1024 positions"):
        build_text_encoder(architecture)
