"""Under torchrun each rank encodes its own shards; the cache equals a single-process run."""

import os
import socket
import subprocess
import sys

from test_encode_runs import argv, assert_same_cache, folder_dataset

from encoding.commands import encode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks_and_one_process(tmp_path, *extra) -> None:
    """Encode (with `extra` flags) under torchrun with two ranks and in one process; the caches are the same."""
    dataset = folder_dataset(tmp_path / "data", 10, corrupt=True)
    reference, out = tmp_path / "single", tmp_path / "ranks"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert encode.main(argv(*dataset, reference, *extra)) == 0  # in this process, one thread like each rank
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "pipeline.cli",
        "encode",
        *argv(*dataset, out, *extra),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("10 images, 19 captions, 3 skipped (complete)") == 1  # printed by rank 0 only
    assert_same_cache(out, reference, exact=True)


def test_torchrun_two_ranks_give_the_single_process_cache(tmp_path):
    two_ranks_and_one_process(tmp_path)
