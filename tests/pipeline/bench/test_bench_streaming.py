"""`xalign bench train --tokens` / `--stream` report streamed vs in-memory throughput and streamed peak memory."""

import json

import pytest

from pipeline.cli import main as cli


def test_bench_train_tokens_reports_its_ratios(capsys):
    argv = ["bench", "train", "--tokens", "--images", "200", "--captions-per-image", "2", "--image-tokens", "4"]
    argv += ["--text-tokens", "6", "--dim", "16", "--hidden-dim", "16", "--batch-size", "16", "--steps", "2"]
    argv += ["--warmup", "1", "--device", "cpu", "--rss-images", "150"]
    assert cli(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["streamed_pairs_per_s"] > 0 and result["memory_pairs_per_s"] > 0
    assert result["streamed_vs_memory"] == result["streamed_pairs_per_s"] / result["memory_pairs_per_s"]
    (rss,) = result["streamed_peak_rss"]
    assert rss["images"] == 150 and rss["cache_mb"] > 0 and rss["peak_rss_mb"] > 0


def test_bench_train_stream_reports_its_ratios_for_pooled_heads(capsys):
    argv = ["bench", "train", "--stream", "--images", "300", "--captions-per-image", "2", "--image-dim", "16"]
    argv += ["--text-dim", "12", "--hidden-dim", "16", "--batch-size", "16", "--steps", "4", "--warmup", "1"]
    argv += ["--device", "cpu", "--rss-images", "200", "--shard-size", "64"]
    assert cli(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["head"] == "mlp" and result["dims"] == [16, 12] and "image_tokens" not in result
    assert result["streamed_vs_memory"] == result["streamed_pairs_per_s"] / result["memory_pairs_per_s"]
    (rss,) = result["streamed_peak_rss"]
    assert rss["images"] == 200 and rss["cache_mb"] > 0 and rss["peak_rss_mb"] > 0


@pytest.mark.parametrize(
    ("flag", "value"), [("--repeats", "0"), ("--rss-images", "abc"), ("--image-dim", "0"), ("--batch-size", "-1")]
)
def test_bench_train_stream_refuses_bad_numbers_naming_the_flag(flag, value, capsys):
    assert cli(["bench", "train", "--stream", flag, value]) == 2
    assert flag in capsys.readouterr().err
