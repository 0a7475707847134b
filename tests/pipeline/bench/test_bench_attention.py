"""`xalign bench attention`: a row per head and token count in the last JSON line; out-of-memory rows are null."""

import json
import subprocess

import pytest
import torch

from encoding.errors import BadInput
from pipeline import cli
from pipeline.bench import attention


def test_bench_attention_reports_every_head_and_token_count(capsys):
    argv = ["bench", "attention", "--tokens", "16,32", "--repeats", "1", "--device", "cpu", "--batch-size", "2"]
    argv += ["--dim", "8", "--hidden-dim", "8", "--num-layers", "1", "--window", "4"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert "| token_transformer | 16 |" in out
    assert result["device"] == "cpu" and result["window"] == 4 and result["batch_size"] == 2
    assert result["memory_method"].startswith("ru_maxrss growth of a fresh subprocess")
    cells = [(r["head"], r["tokens"]) for r in result["rows"]]
    assert cells == [
        ("token_transformer", 16),
        ("token_transformer", 32),
        ("sparse_attention", 16),
        ("sparse_attention", 32),
    ]
    for row in result["rows"]:
        assert set(row) == {"head", "tokens", "seconds", "peak_mb", "note"}
        assert row["seconds"] > 0 and row["peak_mb"] >= 0 and row["note"] is None


def test_bench_attention_times_the_two_tower_text_towers(capsys):
    """DistilBERT (dense) vs Longformer (sliding window) text towers (seed 001's comparison); one caption length,
    as each row is a subprocess that imports transformers (the rows per length are the test above)."""
    argv = ["bench", "attention", "--heads", "distilbert,longformer", "--tokens", "40", "--repeats", "1"]
    argv += ["--device", "cpu", "--batch-size", "2", "--hidden-dim", "8", "--num-layers", "1", "--window", "4"]
    assert cli.main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [(r["head"], r["tokens"]) for r in rows] == [("distilbert", 40), ("longformer", 40)]
    assert all(r["seconds"] > 0 and r["note"] is None for r in rows)


def test_a_killed_worker_is_a_null_row_with_a_note(monkeypatch):
    killed = subprocess.CompletedProcess([], returncode=-9, stdout="", stderr="")
    monkeypatch.setattr(attention.subprocess, "run", lambda *a, **k: killed)
    args = attention.build_parser().parse_args([])
    row = attention.run_one("token_transformer", 4096, args)
    assert row == {
        "head": "token_transformer",
        "tokens": 4096,
        "seconds": None,
        "peak_mb": None,
        "note": "worker killed by signal 9 (out of memory?)",
    }


def test_allocation_failures_are_told_apart_from_other_errors():
    assert attention.out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert attention.out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not attention.out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [("--tokens", "16,x", "--tokens '16,x'"), ("--window", "0", "--window 0"), ("--heads", "bert", "--heads 'bert'")],
)
def test_bad_sizes_are_bad_input(flag, value, said):
    with pytest.raises(BadInput, match=said):
        attention.main([flag, value])
