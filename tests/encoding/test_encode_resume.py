"""Encoding survives `kill -9`: rerunning the same command resumes and gives the uninterrupted cache."""

import os
import signal
import subprocess
import sys
import time

from test_encode_runs import argv, assert_same_cache, folder_dataset

from encoding import cache
from encoding.commands import encode


def _command(*args):
    return [sys.executable, "-m", "pipeline.cli", "encode", *args]


def kill_rerun_and_compare(tmp_path, *extra) -> None:
    """Kill an encode run (with `extra` flags) after its first shard, rerun it; compare with an uninterrupted run.
    Only the killed run is a subprocess (one thread, as `one_torch_thread` gives this process): a shard's bytes
    do not depend on the process that wrote it."""
    root, rows = folder_dataset(tmp_path / "data", 40, corrupt=True)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _command(*argv(root, rows, out, *extra, shard_size=2)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 45
    while time.time() < deadline and process.poll() is None:
        if (out / cache.METADATA).exists() and cache.read_metadata(out)["shards"]:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    meta = cache.read_metadata(out)
    assert 1 <= len(meta["shards"]) < meta["num_shards"] and not meta["complete"]
    assert encode.main(argv(root, rows, out, *extra, shard_size=2)) == 0  # in this process: no second model load
    uninterrupted = tmp_path / "uninterrupted"
    assert encode.main(argv(root, rows, uninterrupted, *extra, shard_size=2)) == 0
    assert_same_cache(out, uninterrupted, exact=True)


def test_kill_9_then_rerun_gives_the_uninterrupted_cache(tmp_path):
    kill_rerun_and_compare(tmp_path)
