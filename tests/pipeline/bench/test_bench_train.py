"""`xalign bench train` prints its three loops' throughput and ratios as the last JSON line."""

import json

import pytest

from encoding.errors import BadInput
from pipeline import cli
from pipeline.bench.train import main


def test_bench_train_reports_engine_limit_and_naive(capsys):
    argv = [
        "bench",
        "train",
        "--images",
        "64",
        "--captions",
        "256",
        "--image-dim",
        "8",
        "--text-dim",
        "6",
        "--batch-size",
        "16",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--device",
        "cpu",
    ]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("engine_pairs_per_s", "naive_pairs_per_s", "limit_pairs_per_s"):
        assert result[key] > 0
    assert result["engine_vs_limit"] == pytest.approx(result["engine_pairs_per_s"] / result["limit_pairs_per_s"])
    assert result["engine_vs_naive"] == pytest.approx(result["engine_pairs_per_s"] / result["naive_pairs_per_s"])
    assert result["device"] == "cpu" and result["batch_size"] == 16


def test_bench_train_refuses_too_few_captions():
    with pytest.raises(BadInput, match=r"--captions 20 is fewer than \(steps \+ warmup\) x batch size"):
        main(["--captions", "20", "--images", "10", "--batch-size", "16", "--steps", "3"])
