"""Nothing lost: `--overwrite` (train, backbone-train, demo) keeps the old run until the new one has written its
first checkpoint and restores it on any failure before; every checkpoint load checks the sha256 recorded when
it was written; `results/<name>` may not be a symbolic link out of `results/`."""

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import write_head_config, write_synthetic_cache

from encoding import checkpoint_hashes
from encoding.backbones.trained import CheckpointImage
from encoding.errors import BadInput
from pipeline import cli
from pipeline.commands import demo
from pipeline.config.backbone import from_dict
from pipeline.config.experiment import load_config
from pipeline.data.split_tensors import load_splits
from pipeline.runs.directory import REPLACED, REPLACING, locked_run
from pipeline.runs.lock import LOCK_FILE
from pipeline.training.backbone import BackboneTrainer
from pipeline.training.checkpoint import resumable_state, save_checkpoint
from pipeline.training.loop import Trainer
from tests.pipeline.training.backbone.backbone_configs import TINY_VIT, write_config

RUN = Path("results") / "x"


def snapshot(run: Path) -> dict:
    """Every file under `run` but its lock, with its bytes."""
    return {
        p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_a_weight_bit(path: Path) -> None:
    """Flip the lowest bit of a byte amid the checkpoint's largest tensor (a finite weight stays finite)."""
    with zipfile.ZipFile(path) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    header = entry.header_offset  # a local file header: 30 bytes, the name, then an extra field of the length at 28
    start = header + 30 + len(entry.filename.encode()) + int.from_bytes(data[header + 28 : header + 30], "little")
    data[start + entry.file_size // 2] ^= 1
    path.write_bytes(bytes(data))


# --- case 1: --overwrite keeps the old run until the new one has its first checkpoint ---------------------------


def test_an_overwrite_that_diverges_keeps_the_old_run(run_copy, capsys):
    run, config = run_copy
    before = snapshot(run)
    argv = ["train", str(config), "--overwrite", "--set", "training.learning_rate=1e30"]
    assert cli.main(argv) == 2
    assert "epoch 0: training loss is nan" in capsys.readouterr().err
    assert snapshot(run) == before
    assert cli.main(["evaluate", str(run)]) == 0  # the old run is whole: its checkpoint verifies


def test_an_overwrite_interrupted_before_its_first_checkpoint_keeps_the_old_run(run_copy, monkeypatch):
    run, config = run_copy
    before = snapshot(run)

    def interrupted(self, epoch, max_batches=None):
        assert (run / REPLACED / "best.pt").is_file() and not (run / "best.pt").exists()  # set aside meanwhile
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["train", str(config), "--overwrite"])
    assert snapshot(run) == before


def test_an_overwrite_that_fails_after_its_first_checkpoint_keeps_the_new_run(run_copy, monkeypatch):
    run, config = run_copy
    old_best = (run / "best.pt").read_bytes()
    train_epoch = Trainer.train_epoch

    def failing_in_epoch_1(self, epoch, max_batches=None):
        if epoch == 1:
            assert not (run / REPLACED).exists()  # the old run went when the first checkpoint was written
            raise RuntimeError("the machine went away")
        return train_epoch(self, epoch, max_batches)

    monkeypatch.setattr(Trainer, "train_epoch", failing_in_epoch_1)
    with pytest.raises(RuntimeError, match="went away"):
        cli.main(["train", str(config), "--overwrite", "--set", "training.seed=7"])
    assert (run / "last.pt").is_file() and (run / "best.pt").read_bytes() != old_best
    assert not (run / "metrics.json").exists() and not (run / REPLACED).exists()


def test_a_backbone_overwrite_refused_at_build_keeps_the_old_run(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config_path = write_config(tmp_path / "c.yaml", synthetic_cache, TINY_VIT)
    splits = load_splits(synthetic_cache, ["train", "val"])
    trainer = BackboneTrainer(load_config(config_path, validate=from_dict), splits["train"], splits["val"])
    run = tmp_path / "results" / "tiny"
    run.mkdir(parents=True)
    save_checkpoint({**trainer.checkpoint(), **resumable_state(trainer)}, run / "last.pt")
    (run / "metrics.json").write_text("{}")
    before = snapshot(run)
    argv = ["backbone-train", str(config_path), "--overwrite", "--set", "model.output_dim=7"]
    assert cli.main(argv) == 2
    assert "'model.output_dim': 7" in capsys.readouterr().err
    assert snapshot(run) == before


def test_a_demo_that_fails_keeps_the_earlier_demo_run(tmp_path, monkeypatch, capsys):
    def fake_encode(request):
        if not (request.out / "metadata.json").exists():
            write_synthetic_cache(request.out)

    monkeypatch.setattr(demo, "encode_cache", fake_encode)
    tiny = ["training.num_epochs=1", "training.device=cpu", "model.output_dim=8", "model.hidden_dim=16"]
    argv = ["demo", "--out", str(tmp_path), "--images", "60", *(a for s in tiny for a in ("--set", s))]
    assert cli.main(argv) == 0
    run = tmp_path / "results" / "demo"
    before = snapshot(run)
    assert cli.main([*argv, "--set", "training.learning_rate=1e30"]) == 2  # diverges in its first epoch
    assert "nan" in capsys.readouterr().err.lower()
    assert snapshot(run) == before and (run / demo.MARK).is_file()


def _old_run(run: Path) -> None:
    for name in ("last.pt", "best.pt", "metrics.json"):
        (run / name).write_text(f"old {name}")


@pytest.mark.parametrize("new_checkpoint", [False, True], ids=["restored", "kept-new"])
def test_a_replacement_left_by_a_killed_writer_is_settled_under_the_lock(tmp_path, new_checkpoint):
    run = tmp_path / "results" / "x"
    (run / REPLACED / "sub").mkdir(parents=True)
    _old_run(run / REPLACED)
    (run / "config.yaml").write_text("the new run's")
    if new_checkpoint:
        (run / "last.pt").write_text("new last.pt")
    with locked_run(run):
        names = sorted(p.name for p in run.iterdir())
    if new_checkpoint:
        assert names == [LOCK_FILE, "config.yaml", "last.pt"] and (run / "last.pt").read_text() == "new last.pt"
    else:
        assert names == [LOCK_FILE, "best.pt", "last.pt", "metrics.json", "sub"]
        assert (run / "last.pt").read_text() == "old last.pt"


def test_a_half_finished_move_is_moved_back(tmp_path):
    run = tmp_path / "results" / "x"
    (run / REPLACING).mkdir(parents=True)
    _old_run(run)
    (run / "best.pt").rename(run / REPLACING / "best.pt")  # killed while setting the old run aside
    with locked_run(run):
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "best.pt", "last.pt", "metrics.json"]


def test_resume_after_a_killed_overwrite_finds_the_old_run(run_copy):
    run, config = run_copy
    (run / REPLACED).mkdir()
    for entry in [e for e in run.iterdir() if e.name not in (LOCK_FILE, REPLACED)]:
        entry.rename(run / REPLACED / entry.name)
    (run / "config.yaml").write_text("name: x\n")  # what the killed new run had written
    assert cli.main(["train", str(config), "--resume", "--set", "training.num_epochs=3"]) == 0
    assert not (run / REPLACED).exists() and len((run / "history.jsonl").read_text().splitlines()) == 3


# --- case 2: checkpoints are hashed when written and checked when loaded ---------------------------------------


def test_each_checkpoint_is_recorded_with_its_sha256(run_copy):
    run, _ = run_copy
    record = json.loads((run / checkpoint_hashes.RECORD).read_text())
    assert record == {"pending": {}, "sha256": {name: sha256(run / name) for name in ("best.pt", "last.pt")}}


def test_a_flipped_bit_in_best_pt_is_refused_naming_the_file_and_both_hashes(run_copy, capsys):
    run, _ = run_copy
    recorded, metrics = sha256(run / "best.pt"), (run / "metrics.json").read_bytes()
    flip_a_weight_bit(run / "best.pt")
    assert cli.main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'best.pt'}: sha256 {sha256(run / 'best.pt')} differs from {recorded}" in err
    assert "pass --no-verify" in err
    assert (run / "metrics.json").read_bytes() == metrics
    assert cli.main(["evaluate", str(run), "--no-verify", "--out", "m.json"]) == 0  # loads as it is


def test_resume_refuses_a_flipped_bit_in_last_pt(run_copy, capsys):
    _, config = run_copy
    flip_a_weight_bit(RUN / "last.pt")
    assert cli.main(["train", str(config), "--resume", "--set", "training.num_epochs=3"]) == 2
    assert f"{RUN / 'last.pt'}: sha256 " in capsys.readouterr().err


def test_a_run_that_records_no_hashes_loads_with_a_warning(run_copy, capsys):
    run, _ = run_copy
    (run / checkpoint_hashes.RECORD).unlink()
    assert cli.main(["evaluate", str(run)]) == 0
    assert f"warning: {run / 'best.pt'}: no sha256 recorded" in capsys.readouterr().err


def test_a_checkpoint_from_a_save_killed_before_its_record_still_verifies(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    old = sha256(path)
    checkpoint_hashes.record_pending(path, "f" * 64)  # killed before the rename: the old file is in place
    assert checkpoint_hashes.verified_sha256(path) == old
    torch.save({"step": 2}, path)
    checkpoint_hashes.record_pending(path, sha256(path))  # killed after the rename, before the record
    assert checkpoint_hashes.verified_sha256(path) == sha256(path)


def test_encode_with_a_damaged_backbone_checkpoint_is_refused(synthetic_cache, tmp_path):
    config = load_config(write_config(tmp_path / "c.yaml", synthetic_cache, TINY_VIT), validate=from_dict)
    splits = load_splits(synthetic_cache, ["train", "val"])
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    save_checkpoint(BackboneTrainer(config, splits["train"], splits["val"]).checkpoint(), path)
    assert CheckpointImage(str(path), torch.device("cpu"), str(path)).weights == sha256(path)[:16]
    flip_a_weight_bit(path)
    with pytest.raises(BadInput, match=r"best\.pt: sha256 [0-9a-f]{64} differs from [0-9a-f]{64}.*remove its entry"):
        CheckpointImage(str(path), torch.device("cpu"), str(path))


# --- case 3: results/<name> may not lead out of results/ -------------------------------------------------------


def test_a_run_directory_linked_out_of_results_is_refused(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x").symlink_to(outside, target_is_directory=True)
    assert cli.main(["train", str(write_head_config(tmp_path, synthetic_cache))]) == 2
    assert f"{RUN}: a symbolic link to {outside}, outside results/" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


def test_a_run_directory_linked_inside_results_is_written(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "real").mkdir(parents=True)
    (tmp_path / "results" / "x").symlink_to(tmp_path / "results" / "real", target_is_directory=True)
    assert cli.main(["train", str(write_head_config(tmp_path, synthetic_cache))]) == 0
    assert (tmp_path / "results" / "real" / "metrics.json").is_file()
