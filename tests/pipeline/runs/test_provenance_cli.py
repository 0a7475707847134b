"""Provenance through `xalign`: each way a run's numbers could silently change meaning is refused with
exit 2 naming both sides, every metrics file says what produced it, and compare shows it."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from encoding import cache
from pipeline import cli
from tests.conftest import write_synthetic_cache
from tests.pipeline.tuning.tune_support import write_optuna_config

SPLIT = ["--val", "10", "--test", "10", "--tuning", "20", "--seed", "0"]


def _config(work: Path, name: str = "r", seed: int = 0) -> str:
    path = work / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ndata: {{cache: cache}}\nmodel: {{output_dim: 8, hidden_dim: 16}}\n"
        f"training: {{num_epochs: 2, batch_size: 8, device: cpu, warmup_steps: 0, seed: {seed}}}\n"
    )
    return str(path)


def _other_cache(work: Path, image_spec: str | None = None) -> Path:
    """A second split cache of the same dims (other contents; another image backbone with `image_spec`)."""
    other = write_synthetic_cache(work / "other", seed=7)
    if image_spec:
        meta_path = other / cache.METADATA
        meta = json.loads(meta_path.read_text())
        meta["image_model"]["spec"] = image_spec
        meta_path.write_text(json.dumps(meta))
    assert cli.main(["split", str(other), *SPLIT]) == 0
    return other


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A working directory with a split synthetic cache and a finished run `results/r`."""
    work = tmp_path_factory.mktemp("provenance")
    write_synthetic_cache(work / "cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert cli.main(["split", "cache", *SPLIT]) == 0
        assert cli.main(["train", _config(work)]) == 0
    return work


@pytest.fixture
def work(trained, tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(trained, copy)
    monkeypatch.chdir(copy)
    return copy


def _refused(argv: list[str], capsys, *patterns: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    for pattern in patterns:
        assert re.search(pattern, err), err
    assert "Traceback" not in err
    return err


def test_metrics_json_carries_a_complete_provenance(work):
    metrics = json.loads((work / "results/r/metrics.json").read_text())
    provenance = metrics["provenance"]
    meta = cache.read_metadata(work / "cache")
    splits = json.loads((work / "cache/splits.json").read_text())
    assert provenance["cache_fingerprint"] == meta["fingerprint"] == splits["cache_fingerprint"]
    assert provenance["splits_fingerprint"] == splits["fingerprint"]
    assert provenance["image_model"]["spec"] == "synthetic:image" and provenance["dataset"]["kind"] == "synthetic"
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["config_sha256"])
    assert {"xalign", "torch"} <= set(provenance["versions"])
    assert json.loads((work / "results/r/provenance.json").read_text())["cache_fingerprint"] == meta["fingerprint"]


def test_resume_on_another_cache_is_refused(work, capsys):
    other = _other_cache(work)
    _refused(
        ["train", "results/r/config.yaml", "--resume", "--set", f"data.cache={other}"],
        capsys,
        r"provenance\.json: the run was trained on cache .* with fingerprint [0-9a-f]{12}; .*other now has",
        r"train a new run",
    )


def test_resume_with_another_learning_rate_is_refused_but_more_epochs_are_not(work, capsys):
    _refused(
        ["train", "results/r/config.yaml", "--resume", "--set", "training.learning_rate=0.01"],
        capsys,
        r"config\.yaml: --resume .* differs in training\.learning_rate: 0\.001 -> 0\.01",
    )
    assert cli.main(["train", "results/r/config.yaml", "--resume", "--set", "training.num_epochs=3"]) == 0


def test_a_run_saved_before_a_key_existed_resumes_with_its_default(work):
    config = work / "results/r/config.yaml"
    saved = config.read_text()
    lines = [line for line in saved.splitlines(keepends=True) if not line.strip().startswith(("optimizer:", "betas:"))]
    assert len(lines) == len(saved.splitlines()) - 2
    config.write_text("".join(lines))
    try:
        assert cli.main(["train", str(config), "--resume", "--set", "training.num_epochs=3"]) == 0
    finally:
        config.write_text(saved)


def test_a_new_split_needs_force_and_then_evaluate_needs_allow_new_split(work, capsys):
    before = (work / "cache/splits.json").read_bytes()
    _refused(["split", "cache", "--seed", "1"], capsys, r"splits\.json: exists; .*--force")
    assert (work / "cache/splits.json").read_bytes() == before
    assert cli.main(["split", "cache", "--seed", "1", "--force"]) == 0
    capsys.readouterr()
    _refused(["evaluate", "results/r"], capsys, r"split with fingerprint [0-9a-f]{12}", r"--allow-new-split")
    _refused(["train", "results/r/config.yaml", "--resume"], capsys, r"split with fingerprint")
    assert cli.main(["evaluate", "results/r", "--allow-new-split"]) == 0
    provenance = json.loads((work / "results/r/metrics.json").read_text())["provenance"]
    assert provenance["splits_fingerprint"] == json.loads((work / "cache/splits.json").read_text())["fingerprint"]
    assert provenance["trained_on_splits_fingerprint"] != provenance["splits_fingerprint"]


def test_evaluate_after_the_cache_changed_is_refused(work, capsys):
    meta_path = work / "cache" / cache.METADATA
    meta = json.loads(meta_path.read_text())
    meta["text_model"]["weights"] = "re-encoded"
    meta_path.write_text(json.dumps(meta))
    _refused(["evaluate", "results/r"], capsys, r"trained on cache .* fingerprint", r"changed")


def test_evaluate_on_a_cache_of_another_backbone_is_refused_even_with_equal_dims(work, capsys):
    other = _other_cache(work, image_spec="synthetic:another-image-backbone")
    _refused(
        ["evaluate", "results/r", "--cache", str(other)],
        capsys,
        r"image_model is synthetic:another-image-backbone .* trained on synthetic:image",
    )
    same = _other_cache(work / "same")
    assert cli.main(["evaluate", "results/r", "--cache", str(same)]) == 0  # same backbones, other data: allowed
    written = next((work / "results/r").glob("metrics-other-*.json"))
    assert json.loads(written.read_text())["provenance"]["cache"] == str(same.resolve())


def test_a_study_name_reused_on_another_cache_is_refused(work, capsys):
    config = write_optuna_config(work / "optuna.yaml", work / "cache", n_trials=1)
    assert cli.main(["tune", str(config)]) == 0
    other = _other_cache(work)
    before = (work / "results/optuna/tiny_study.db").stat().st_size
    _refused(
        ["tune", str(config), "--set", f"data.cache={other}"],
        capsys,
        r"study 'tiny_study'.*cache_fingerprint",
        r"new study name|study_name",
    )
    assert (work / "results/optuna/tiny_study.db").stat().st_size == before


def test_encode_that_reads_no_image_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wrong").mkdir()
    (tmp_path / "rows.csv").write_text("image,caption\na.png,a cat\nb.png,a dog\n")
    argv = ["encode", "--dataset", "folder", "--root", "wrong", "--annotations", "rows.csv", "--out", "enc"]
    _refused([*argv, "--image-model", "timm:resnet18", "--text-model", "st:x"], capsys, r"wrong: none of the 2 image")
    assert not (tmp_path / "enc").exists()


def test_compare_groups_three_seeds_with_mean_and_std(work, capsys):
    for seed in (1, 2, 3):
        assert cli.main(["train", _config(work, f"seed{seed}", seed=seed)]) == 0
    capsys.readouterr()
    assert cli.main(["compare", *(str(p) for p in sorted((work / "results").glob("seed*"))), "--group-seeds"]) == 0
    out = capsys.readouterr().out
    header, _, row = out.splitlines()[:3]
    assert "dataset" in header and "image backbone" in header and "test gallery" in header
    rsums = [json.loads((work / f"results/seed{s}/metrics.json").read_text())["rsum"] for s in (1, 2, 3)]
    mean, std = sum(rsums) / 3, (sum((r - sum(rsums) / 3) ** 2 for r in rsums) / 2) ** 0.5
    assert f"{mean:.1f} ± {std:.1f}" in row and "synthetic" in row
    assert yaml.safe_load((work / "results/seed1/config.yaml").read_text())["training"]["seed"] == 1
