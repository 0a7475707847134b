"""`xalign bench scale` runs split, a streamed epoch and evaluate on synthetic caches, each measured alone."""

import json

import pytest

from pipeline.cli import main as cli


@pytest.mark.slow
def test_bench_scale_reports_each_stage_at_each_size(capsys, tmp_path):
    argv = ["bench", "scale", "--images", "300,600", "--captions-per-image", "2", "--image-dim", "16"]
    argv += ["--text-dim", "12", "--held-out", "50", "--hidden-dim", "16", "--batch-size", "32"]
    argv += ["--shard-size", "128", "--device", "cpu", "--dir", str(tmp_path)]
    assert cli(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["images"] for s in result["sizes"]] == [300, 600]
    for size in result["sizes"]:
        assert size["captions"] == 2 * size["images"] and size["cache_mb"] >= 0
        for stage in ("split", "train", "evaluate"):
            assert size[stage]["seconds"] > 0 and size[stage]["peak_rss_mb"] > 50
        assert 0 <= size["train"]["epoch_seconds"] < size["train"]["seconds"]
        assert 0 <= size["evaluate"]["test_rsum"] <= 600
    assert not list(tmp_path.iterdir())  # the caches are removed


@pytest.mark.parametrize("images", ["abc", "80", ""])
def test_bench_scale_refuses_bad_sizes(images, capsys):
    assert cli(["bench", "scale", "--images", images, "--held-out", "50"]) == 2
    assert "--images" in capsys.readouterr().err


def test_bench_scale_refuses_a_directory_that_is_not_a_cgroup(tmp_path, capsys):
    assert cli(["bench", "scale", "--images", "300", "--held-out", "50", "--cgroup", str(tmp_path)]) == 2
    assert "not a cgroup directory" in capsys.readouterr().err
