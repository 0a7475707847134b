"""Every bad input of the safety table, through `xalign`: exit code 2, a message naming the file or key,
no traceback, no code run from a file, nothing outside the run deleted.

Each case builds its input in a fresh working directory holding a tiny split cache (`cache/`) and
a finished run (`results/done/`), then runs one command.
"""

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest
import torch

from pipeline import cli
from tests.conftest import write_synthetic_cache
from tests.pipeline.tuning.tune_support import write_optuna_config

ROOT = Path(__file__).resolve().parents[1]
MARKER = "payload-ran"
NO_MODELS = ["--out", "enc", "--image-model", "timm:none", "--text-model", "st:none"]  # models fail after the reader


class Payload:
    """Unpickling this object would create the marker file in the working directory."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _config(work: Path, name: str = "r", model: str = "{output_dim: 8, hidden_dim: 16}", training: str = "") -> str:
    path = work / f"{name or 'unnamed'}.yaml".replace("/", "_")
    path.write_text(
        f"name: '{name}'\ndata: {{cache: cache}}\nmodel: {model}\n"
        f"training: {{num_epochs: 2, batch_size: 8, device: cpu, warmup_steps: 0{training}}}\n"
    )
    return str(path)


def _train(*args: str) -> Callable[[Path], list[str]]:
    return lambda work: ["train", _config(work), *args]


def _with_set(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda work: ["train", _config(work, "fresh"), *[a for o in overrides for a in ("--set", o)]]


def _named(name: str, *args: str) -> Callable[[Path], list[str]]:
    return lambda work: ["train", _config(work, name), *args]


def _yaml_top_level(text: str) -> Callable[[Path], list[str]]:
    def build(work):
        (work / "top.yaml").write_text(text)
        return ["train", str(work / "top.yaml")]

    return build


def _shard(work: Path, index: int = 0) -> Path:
    return work / "cache" / f"shard-{index:05d}.h5"


def _flip_sign_bits(work: Path) -> None:
    """Flip the sign bit of one stored image embedding value, in place (the file's size is unchanged)."""
    path = _shard(work)
    with h5py.File(path, "r") as f:
        offset = f["images/embeddings"].id.get_offset()
    with open(path, "r+b") as f:
        f.seek(offset + 3)  # the high byte of the first little-endian float32
        byte = f.read(1)[0]
        f.seek(offset + 3)
        f.write(bytes([byte ^ 0x80]))


def _truncate(work: Path) -> None:
    path = _shard(work)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_splits(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(work):
        path = work / "cache" / "splits.json"
        edited = edit(json.loads(path.read_text()))
        path.write_text(edited if isinstance(edited, str) else json.dumps(edited))

    return apply


def _overlap(splits: dict) -> dict:
    return {**splits, "test": splits["test"] + splits["train"][:3]}


def _unknown_ids(splits: dict) -> dict:
    return {**splits, "train": splits["train"] + ["no-such-image"]}


def _all_test_unknown(splits: dict) -> dict:
    return {**splits, "test": ["ghost-1", "ghost-2"]}


def _train_a_string(splits: dict) -> dict:
    return {**splits, "train": "img0001"}


def _evaluate_done(work: Path) -> list[str]:
    return ["evaluate", "results/done"]


def _metadata(text: str) -> Callable[[Path], None]:
    return lambda work: (work / "cache" / "metadata.json").write_text(text)


def _drop_metadata_key(work: Path) -> None:
    path = work / "cache" / "metadata.json"
    meta = json.loads(path.read_text())
    del meta["shards"][0]["sha256"]
    path.write_text(json.dumps(meta))


def _payload_checkpoint(name: str) -> Callable[[Path], None]:
    return lambda work: torch.save({"model": Payload()}, work / "results" / "done" / name)


def _garbage_checkpoint(name: str) -> Callable[[Path], None]:
    return lambda work: (work / "results" / "done" / name).write_bytes(b"\x00not a checkpoint" * 8)


def _truncated_checkpoint(name: str) -> Callable[[Path], None]:
    def apply(work):
        path = work / "results" / "done" / name
        path.write_bytes(path.read_bytes()[:200])

    return apply


def _resume_done(*args: str) -> Callable[[Path], list[str]]:
    def build(work):
        config = work / "results" / "done" / "config.yaml"
        return ["train", str(config), "--resume", *[a for o in args for a in ("--set", o)]]

    return build


def _cifar_payload(work: Path) -> list[str]:
    root = work / "cifar"
    root.mkdir()
    for name in ("train", "test", "meta"):
        (root / name).write_bytes(pickle.dumps({b"data": Payload()}))
    return ["encode", "--dataset", "cifar100", "--root", str(root), *NO_MODELS]


def _folder(rows: bytes, suffix: str) -> Callable[[Path], list[str]]:
    def build(work):
        (work / "images").mkdir()
        (work / f"rows{suffix}").write_bytes(rows)
        annotations = ["--annotations", str(work / f"rows{suffix}")]
        return ["encode", "--dataset", "folder", "--root", str(work / "images"), *annotations, *NO_MODELS]

    return build


def _tune_storage(url: str | Callable[[Path], str]) -> Callable[[Path], list[str]]:
    def build(work):
        config = write_optuna_config(work / "optuna.yaml", work / "cache", n_trials=1)
        return ["tune", str(config), "--storage", url(work) if callable(url) else url]

    return build


def _not_a_database(work: Path) -> str:
    (work / "junk.db").write_bytes(b"this is not a database\n" * 64)
    return f"sqlite:///{work / 'junk.db'}"


def _under_a_file(work: Path) -> str:
    (work / "plain-file").write_text("x")
    return f"sqlite:///{work / 'plain-file' / 'study.db'}"


@dataclass
class Case:
    id: str
    command: Callable[[Path], list[str]]  # work dir → argv
    message: str  # regex the error must match
    setup: Callable[[Path], None] | None = None


CASES = [
    # code execution from files
    Case("evaluate, best.pt with a pickle payload", _evaluate_done, r"best\.pt", _payload_checkpoint("best.pt")),
    Case("resume, last.pt with a pickle payload", _resume_done(), r"last\.pt", _payload_checkpoint("last.pt")),
    Case("encode, CIFAR pickle with a payload", _cifar_payload, r"cifar.*(meta|train|test)"),
    # the run name
    Case("name '..' with --overwrite", _named("..", "--overwrite"), r"name"),
    Case("empty name with --overwrite", _named("", "--overwrite"), r"name"),
    Case("name 'a/b'", _named("a/b"), r"name"),
    Case("absolute name", lambda w: _named(str(w / "elsewhere"))(w), r"name"),
    # corruption
    Case("shard with a flipped sign bit", _train(), r"shard-00000\.h5", _flip_sign_bits),
    Case("splits with train/test overlap", _train(), r"splits\.json", _edit_splits(_overlap)),
    Case("split id missing from the cache", _train(), r"no-such-image", _edit_splits(_unknown_ids)),
    Case("all test ids unknown", _train(), r"ghost-1", _edit_splits(_all_test_unknown)),
    Case("truncated shard, train", _train(), r"shard-00000\.h5", _truncate),
    Case("truncated shard, evaluate", _evaluate_done, r"shard-00000\.h5", _truncate),
    Case("truncated shard, split --verify", lambda w: ["split", "cache", "--verify"], r"shard-00000\.h5", _truncate),
    Case("deleted shard", _train(), r"shard-00001\.h5", lambda w: _shard(w, 1).unlink()),
    Case("metadata.json not an object", _train(), r"metadata\.json", _metadata("[1, 2, 3]")),
    Case("metadata.json missing a key", _train(), r"metadata\.json.*sha256", _drop_metadata_key),
    Case("splits.json not JSON", _train(), r"splits\.json", _edit_splits(lambda s: "{not json")),
    Case("splits.json split not a list", _train(), r"splits\.json.*train", _edit_splits(_train_a_string)),
    # configs
    Case("YAML top level a list", _yaml_top_level("- a\n- b\n"), r"top\.yaml"),
    Case("YAML top level a scalar", _yaml_top_level("42\n"), r"top\.yaml"),
    Case("invalid YAML in --set", _with_set("model.hidden_dim=[1, 2"), r"model\.hidden_dim"),
    Case("num_epochs -1", _with_set("training.num_epochs=-1"), r"training\.num_epochs"),
    Case("dropout 1.5", _with_set("model.dropout=1.5"), r"model\.dropout"),
    Case("learning_rate .nan", _with_set("training.learning_rate=.nan"), r"training\.learning_rate"),
    Case("num_layers 0", _with_set("model.num_layers=0"), r"model\.num_layers"),
    Case("weight_decay -1", _with_set("training.weight_decay=-1"), r"training\.weight_decay"),
    Case("warmup_steps -10", _with_set("training.warmup_steps=-10"), r"training\.warmup_steps"),
    Case("momentum 5", _with_set("model.type=blip", "model.momentum=5"), r"model\.momentum"),
    Case("grad_clip nan", _with_set("training.grad_clip=.nan"), r"training\.grad_clip"),
    # dataset files
    Case("non-UTF-8 CSV", _folder(b"image,caption\na.png,caf\xe9\n", ".csv"), r"rows\.csv"),
    Case("non-UTF-8 JSONL", _folder(b'{"image": "a.png", "caption": "caf\xe9"}\n', ".jsonl"), r"rows\.jsonl"),
    Case("JSONL lines that are lists", _folder(b'["a.png", "x"]\n[1]\n', ".jsonl"), r"images|rows\.jsonl"),
    Case("non-integer label", _folder(b"image,caption,label\na.png,a cat,cat\n", ".csv"), r"rows\.csv:2.*label"),
    # training and checkpoints
    Case("non-finite loss", _with_set("training.learning_rate=1e30", "loss.type=siglip"), r"loss|learning_rate"),
    Case("resume with a changed architecture", _resume_done("model.hidden_dim=32"), r"model\.hidden_dim|last\.pt"),
    Case("evaluate, garbage best.pt", _evaluate_done, r"best\.pt", _garbage_checkpoint("best.pt")),
    Case("resume, truncated last.pt", _resume_done(), r"last\.pt", _truncated_checkpoint("last.pt")),
    # options that would have no effect
    Case("split --verify with --force", lambda w: ["split", "cache", "--verify", "--force"], r"--force would have"),
    Case(
        "evaluate --cache with --allow-new-split",
        lambda w: ["evaluate", "--cache", "cache", "--allow-new-split"],
        r"--allow-new-split: applies to a run",
    ),  # fmt: skip
    # tune storage
    Case("storage with an unsupported scheme", _tune_storage("foo://somewhere/db"), r"storage 'foo://somewhere/db'"),
    Case("storage under a plain file", _tune_storage(_under_a_file), r"plain-file"),
    Case("storage file that is not a database", _tune_storage(_not_a_database), r"junk\.db"),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A working directory with a split synthetic cache (3 shards) and a finished run `results/done`."""
    from encoding.commands import split

    work = tmp_path_factory.mktemp("prepared")
    write_synthetic_cache(work / "cache")
    assert split.main([str(work / "cache"), "--val", "10", "--test", "10", "--tuning", "20", "--seed", "0"]) == 0
    cwd = Path.cwd()
    os.chdir(work)
    try:
        assert cli.main(["train", _config(work, "done")]) == 0
    finally:
        os.chdir(cwd)
    return work


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_naming_the_file_or_key(case, prepared, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(prepared, work)
    monkeypatch.chdir(work)
    if case.setup:
        case.setup(work)
    argv = case.command(work)
    before = _snapshot(work)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(case.message, err), err
    assert "Traceback" not in err
    assert not (work / MARKER).exists()
    assert all(_snapshot(work).get(path) == data for path, data in before.items() if "results/fresh" not in path)


def test_a_password_in_the_storage_url_never_appears(prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = _tune_storage("postgresql+psycopg2://user:s3cret@127.0.0.1:1/db")(prepared)
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    assert "s3cret" not in out.out + out.err
    assert "127.0.0.1" in out.err


def test_inspect_into_a_closed_pipe_ends_quietly(prepared):
    """`true` exits without reading, so every write of `inspect` meets a closed pipe."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = f"{sys.executable} -m pipeline.cli inspect {prepared / 'cache'} | true"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0  # the pipeline's status is `true`'s
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_bench_help_exits_0(capsys):
    assert cli.main(["bench", "--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_help_into_a_closed_pipe_ends_quietly():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = f"{sys.executable} -m pipeline.cli import --help | true"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
