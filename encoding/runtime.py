"""Device, precision, torchrun and library-version helpers shared by encoding and training."""

import contextlib
import datetime
import importlib.metadata
import os
import time

import torch

from encoding.errors import BadInput

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's RANK / WORLD_SIZE / LOCAL_RANK; (0, 1, 0) without them.

    Reads the environment only; no process group is started.
    """
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def distributed() -> tuple[int, int, int]:
    """`torchrun_env()`, with a gloo process group started when there is more than one process.

    The group is used only for a final barrier: ranks share no tensors, each encodes its own shards.
    """
    rank, world, local_rank = torchrun_env()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(days=3))  # ranks may finish hours apart
    return rank, world, local_rank


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' → cuda:local_rank when CUDA is present, else cpu; anything else must be valid and available."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BadInput(f"device '{name}': {err}; use auto, cpu or cuda[:N]") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device '{name}': CUDA is not available on this machine; use auto or cpu")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' → bf16 on GPUs that support it, else fp32. fp16/bf16 on CPU fall back to fp32."""
    if name not in ("auto", *PRECISIONS):
        raise BadInput(f"precision '{name}': choose one of auto, {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        return "fp32"
    if name == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return name


def autocast(device: torch.device, precision: str):
    """Mixed precision on CUDA for fp16/bf16; a no-op context otherwise."""
    if device.type == "cuda" and precision != "fp32":
        return torch.autocast("cuda", dtype=PRECISIONS[precision])
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (`torch.cuda.synchronize` on CUDA; a no-op elsewhere), for timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, device: torch.device) -> float:
    """Seconds `run()` takes, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def library_versions() -> dict:
    versions = {}
    for package in ("torch", "transformers", "open_clip_torch", "sentence-transformers", "timm"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions
