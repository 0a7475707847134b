"""`xalign bench encode --tokens` also measures the pooled-only pipeline and reports what storing tokens costs."""

import json

from pipeline import cli


def test_bench_encode_tokens_reports_the_pooled_pipeline_and_the_tokens_cost(capsys):
    argv = ["bench", "encode", "--tokens", "--images", "16", "--batch-size", "8", "--shard-size", "8"]
    argv += ["--image-size", "64", "--width", "64", "--num-workers", "0", "--repeats", "1"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("pipeline_images_per_s", "forward_images_per_s", "pooled_pipeline_images_per_s"):
        assert result[key] > 0, key
    ratio = result["pooled_pipeline_images_per_s"] / result["pipeline_images_per_s"]
    assert abs(result["tokens_cost"] - ratio) < 0.05 * ratio + 0.01
    assert result["image_tokens"] == [4, 512] and result["pipeline_vs_forward"] > 0
    assert cli.main([*argv, "--image-tokens", "3"]) == 2
    assert "--image-tokens 3: expected a perfect square" in capsys.readouterr().err
