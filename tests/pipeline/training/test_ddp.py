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
