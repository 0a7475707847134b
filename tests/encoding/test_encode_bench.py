"""`xalign bench encode` prints one JSON object last, with the pipeline and forward rates and their ratio."""

import json

from pipeline import cli


def test_bench_encode_reports_pipeline_forward_and_ratio(capsys):
    argv = [
        "bench",
        "encode",
        "--images",
        "24",
        "--batch-size",
        "8",
        "--shard-size",
        "16",
        "--image-size",
        "32",
        "--width",
        "64",
        "--num-workers",
        "0",
        "--repeats",
        "1",
    ]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["pipeline_images_per_s"] > 0 and result["forward_images_per_s"] > 0
    ratio = result["forward_images_per_s"] and result["pipeline_images_per_s"] / result["forward_images_per_s"]
    assert abs(result["pipeline_vs_forward"] - ratio) < 0.05
    assert result["images"] == 24 and result["device"] == "cpu"


def test_bench_encode_webdataset_reports_tars_against_the_folder(capsys):
    argv = ["bench", "encode", "--dataset", "webdataset", "--images", "12", "--batch-size", "4", "--shard-size", "5"]
    argv += ["--image-size", "32", "--width", "48", "--num-workers", "0", "--repeats", "1"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ratio = result["webdataset_images_per_s"] / result["pipeline_images_per_s"]
    assert result["dataset"] == "webdataset" and abs(result["webdataset_vs_folder"] - ratio) < 0.05
