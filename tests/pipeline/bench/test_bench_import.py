"""`xalign bench import` generates .npy inputs chunk by chunk, imports them in a fresh subprocess and prints a
table, then one JSON object last on stdout; its temporary files are removed."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from encoding.errors import BadInput
from pipeline.bench import imports as bench
from pipeline.cli import main as cli

KEYS = ("rows", "seconds", "rows_per_s", "peak_rss_mb", "input_bytes", "output_bytes", "dim_image", "dim_text")


def test_bench_import_reports_rows_per_second_and_peak_memory(tmp_path, capsys):
    argv = ["bench", "import", "--rows", "300", "--dim-image", "8", "--dim-text", "6", "--shard-size", "16"]
    assert cli([*argv, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert all(key in result for key in KEYS) and out[0].startswith("| rows | dims |")
    assert (result["rows"], result["images"], result["dim_image"], result["dim_text"]) == (300, 60, 8, 6)
    assert result["shards"] == 4 and result["rows_per_s"] == pytest.approx(300 / result["seconds"])
    assert result["peak_rss_mb"] > 0 and result["input_bytes"] > 300 * 14 * 4 and result["output_bytes"] > 0
    assert list(tmp_path.iterdir()) == []


def test_generated_inputs_share_each_images_vector_and_are_unit(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "CHUNK_ROWS", 10)  # several chunks
    files = bench.generate(tmp_path, 23, 4, 3, per_image=5)
    images, texts = np.load(files["images"]), np.load(files["texts"])
    assert images.shape == (23, 4) and texts.shape == (23, 3)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert np.array_equal(images[5], images[9]) and not np.array_equal(images[9], images[10])
    ids = pq.read_table(files["pairs"]).column("image_id").to_pylist()
    assert ids[:6] == ["img000000000"] * 5 + ["img000000001"] and ids[-1] == "img000000004"


def test_bench_import_rejects_a_size_below_one():
    with pytest.raises(BadInput, match="--rows 0: must be a positive integer"):
        bench.main(["--rows", "0"])
