"""The run directory's write lock: a second writer exits 2 naming the holder's pid, a killed holder's lock is
taken over, and --overwrite deletes only the run's contents, after taking the lock."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from encoding.errors import BadInput
from pipeline import cli
from pipeline.runs.directory import writing_run
from pipeline.runs.lock import LOCK_FILE, run_lock

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
HOLD = (
    "import sys, time\nfrom pathlib import Path\nfrom pipeline.runs.lock import run_lock\n"
    "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(600)\n"
)


def _config(tmp_path: Path, cache: Path, epochs: int = 2) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"name: x\ndata: {{cache: {cache}}}\nmodel: {{output_dim: 8, hidden_dim: 16}}\n"
        f"training: {{num_epochs: {epochs}, patience: 1000, batch_size: 8, device: cpu}}\n"
    )
    return path


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock of `results/x` under `tmp_path`; returns it (killed at teardown)."""
    started = []

    def start() -> subprocess.Popen:
        command = [sys.executable, "-c", HOLD, str(tmp_path / "results" / "x")]
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_writer_exits_2_naming_the_holder_and_deletes_nothing(
    synthetic_cache, tmp_path, monkeypatch, capsys, holder
):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, synthetic_cache)
    assert cli.main(["train", str(config)]) == 0
    run = tmp_path / "results" / "x"
    kept = sorted(p.name for p in run.iterdir())
    first = holder()
    capsys.readouterr()
    for extra in ([], ["--resume"], ["--overwrite"]):
        assert cli.main(["train", str(config), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert f"results/x: another process (pid {first.pid}) is writing this run" in err
        assert "wait for it or use another name" in err
    assert sorted(p.name for p in run.iterdir()) == kept


def test_a_lock_left_by_a_killed_process_is_taken_over(synthetic_cache, tmp_path, monkeypatch, holder):
    monkeypatch.chdir(tmp_path)
    first = holder()
    first.send_signal(signal.SIGKILL)
    first.wait()
    lock = tmp_path / "results" / "x" / LOCK_FILE
    assert lock.read_text().strip() == str(first.pid)  # the stale file is still there
    assert cli.main(["train", str(_config(tmp_path, synthetic_cache))]) == 0
    assert (tmp_path / "results" / "x" / "metrics.json").is_file()
    assert lock.exists() and lock.read_text() == ""  # released: no pid left behind


def test_two_concurrent_trains_one_wins_the_other_names_it(synthetic_cache, tmp_path):
    """The first train is paused (SIGSTOP) once it holds the lock, so the second meets it there however loaded
    the machine is; resumed, the first finishes its run."""
    config = _config(tmp_path, synthetic_cache)
    command = [sys.executable, "-m", "pipeline.cli", "train", str(config)]
    pipes = {"cwd": tmp_path, "env": ENV, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    winner = subprocess.Popen(command, **pipes)
    lock = tmp_path / "results" / "x" / LOCK_FILE
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text() == f"{winner.pid}\n") and winner.poll() is None:
        assert time.time() < deadline, "the first train never took the lock"
        time.sleep(0.01)
    assert winner.poll() is None, "the first train ended before it was seen holding the lock"
    winner.send_signal(signal.SIGSTOP)
    try:
        loser = subprocess.run(command, timeout=300, **pipes)
    finally:
        winner.send_signal(signal.SIGCONT)
    _, winner_err = winner.communicate(timeout=300)
    assert (winner.returncode, loser.returncode) == (0, 2), (winner_err[-2000:], loser.stderr[-2000:])
    assert f"another process (pid {winner.pid}) is writing this run" in loser.stderr
    assert "Traceback" not in loser.stderr
    assert (tmp_path / "results" / "x" / "metrics.json").is_file()


def test_overwrite_empties_only_the_run_directory_and_keeps_the_lock(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, synthetic_cache)
    assert cli.main(["train", str(config)]) == 0
    run = tmp_path / "results" / "x"
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "keep.txt").write_text("keep")
    (run / "link").symlink_to(outside, target_is_directory=True)
    (run / "sub").mkdir()
    (run / "sub" / "old.txt").write_text("old")
    (tmp_path / "results" / "y").mkdir()
    assert cli.main(["train", str(config), "--overwrite"]) == 0
    assert (outside / "deep" / "keep.txt").read_text() == "keep"
    assert (tmp_path / "results" / "y").is_dir()
    assert not (run / "link").exists() and not (run / "sub").exists()
    assert (run / LOCK_FILE).exists() and (run / "metrics.json").is_file()


def test_the_lock_is_held_while_the_block_runs(tmp_path):
    run = tmp_path / "results" / "x"
    with run_lock(run):
        assert (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(BadInput, match=rf"another process \(pid {os.getpid()}\)"), run_lock(run):
            pass
    with run_lock(run):  # released at the end of the block
        pass


def test_torchrun_ranks_other_than_0_neither_lock_nor_delete(tmp_path, monkeypatch, holder):
    holder()
    run = tmp_path / "results" / "x"
    (run / "last.pt").write_bytes(b"rank 0 replaces it")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in {"LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)  # the rest of a torchrun environment
    with writing_run("x", resume=False, overwrite=True, results=tmp_path / "results") as out_dir:
        assert out_dir == run and (run / "last.pt").exists()
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(BadInput, match="another process"), writing_run("x", False, True, tmp_path / "results"):
        pass
    assert (run / "last.pt").exists()


def test_a_file_where_the_run_directory_goes_is_bad_input(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x").write_text("not a directory")
    with pytest.raises(BadInput, match="results/x: cannot create the run directory's lock file"):
        with writing_run("x", resume=False, overwrite=False, results=tmp_path / "results"):
            pass


def test_resume_of_nothing_creates_no_directory(tmp_path):
    with pytest.raises(BadInput, match="nothing to resume"):
        with writing_run("x", resume=True, overwrite=False, results=tmp_path / "results"):
            pass
    assert not (tmp_path / "results").exists()
