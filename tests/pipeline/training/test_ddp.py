"""torchrun with 2 CPU processes (gloo): one step equals the single-process step on the same global batch."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_step.py")
REPO = Path(__file__).resolve().parents[3]


def _run(prefix: list[str], cache: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*prefix, str(WORKER), str(cache), str(out)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=False)


def test_two_ranks_step_like_one_process_on_the_global_batch(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(WORKER), str(synthetic_cache), str(tmp_path / "single.pt")])
    runpy.run_path(str(WORKER))  # the single process: this one (one thread, like each rank)
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    ranks = _run(torchrun, synthetic_cache, tmp_path / "ddp.pt")
    assert single["world"] == 1 and ranks["world"] == 2
    torch.testing.assert_close(ranks["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    for name, value in single["model"].items():
        torch.testing.assert_close(ranks["model"][name], value, rtol=1e-4, atol=1e-6)


def test_two_nodes_streaming_their_shares_step_like_one_process(synthetic_cache, tmp_path, monkeypatch):
    """Two `torchrun --nnodes 2` invocations on 127.0.0.1 (one process each, static rendezvous), each streaming its
    share of the rows from the shards: world size 2 across "machines", and the same step as one process holding
    the split in memory."""
    monkeypatch.setattr(sys, "argv", [str(WORKER), str(synthetic_cache), str(tmp_path / "single.pt")])
    runpy.run_path(str(WORKER))
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank)]
            + ["--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", "29519"]
            + [str(WORKER), str(synthetic_cache), str(tmp_path / "nodes.pt"), "stream"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    errors = [node.communicate(timeout=240)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for err in errors]
    two_nodes = torch.load(tmp_path / "nodes.pt", weights_only=False)
    assert two_nodes["world"] == 2 and two_nodes["streamed"] and not single["streamed"]
    torch.testing.assert_close(two_nodes["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    for name, value in single["model"].items():
        torch.testing.assert_close(two_nodes["model"][name], value, rtol=1e-4, atol=1e-6)
