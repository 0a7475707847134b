"""The main job: `xalign demo` end to end, far above chance (the contract of the README's first command),
with a complete provenance; then a seed sweep on its cache, folded into mean ± std by `compare`."""

import json

import pytest

from pipeline import cli
from pipeline.commands.demo import CONFIG as DEMO_CONFIG
from pipeline.evaluation.metrics import chance_recall


@pytest.mark.slow
@pytest.mark.rendered_figures
@pytest.mark.usefixtures("all_torch_threads")
def test_demo_beats_chance_fivefold_and_seeds_group_in_compare(tmp_path, capsys, monkeypatch):
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| t2i chance |" in out and "randomly initialised" in err
    run = tmp_path / "results" / "demo"
    for name in ("config.yaml", "best.pt", "metrics.json", "training_curves.png", "history.jsonl"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    n_images, n_captions = metrics["num_images"], metrics["num_captions"]
    assert metrics["split"] == "test" and n_images == 300 and n_captions == 1500
    assert metrics["t2i"]["R@10"] >= 5 * chance_recall(n_images, 10)
    assert metrics["i2t"]["R@10"] >= 5 * chance_recall(n_captions, 10, positives=5)
    provenance = metrics["provenance"]
    assert provenance["image_model"]["spec"] == "timm:resnet18" and provenance["dataset"]["kind"] == "demo"
    assert all(provenance[key] for key in ("cache", "cache_fingerprint", "splits_fingerprint", "config_sha256"))

    monkeypatch.chdir(tmp_path)
    short = ["--set", "training.num_epochs=3", "--set", "data.cache=pretrain_encoded/demo-1500"]
    for seed in (1, 2, 3):
        argv = ["train", str(DEMO_CONFIG), "--set", f"name=seed{seed}", "--set", f"training.seed={seed}", *short]
        assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["compare", *(str(p) for p in sorted((tmp_path / "results").iterdir())), "--group-seeds"]) == 0
    rows = capsys.readouterr().out.splitlines()
    seeds = next(row for row in rows if "seed" in row.split("|")[1])
    assert "| 3 |" in seeds and "±" in seeds and "demo" in seeds and "timm:resnet18" in seeds
    print("\n".join(rows))
