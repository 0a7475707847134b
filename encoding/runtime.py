"""Device, precision, torchrun and library-version helpers shared by encoding and training."""

import contextlib
import datetime
import importlib.metadata
import os
import time

import torch

from encoding.errors import BadInput
from encoding.safe_load import shown

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


RENDEZVOUS_TIMEOUT = datetime.timedelta(minutes=10)  # for every rank to join the group (nccl's default timeout)
FINISH_TIMEOUT = datetime.timedelta(days=3)  # for every rank to finish encoding: ranks may finish hours apart
RENDEZVOUS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets besides WORLD_SIZE


def _env_int(name: str, default: int, low: int, below: tuple[str, int] | None = None) -> int:
    """The integer environment variable `name` (`default` when unset), at least `low` and less than the
    named bound `below`; `BadInput` naming the variable otherwise."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"torchrun environment: {name}={shown(raw)} is not an integer") from None
    if value < low or below is not None and value >= below[1]:
        bound = f" < {below[0]} ({below[1]})" if below else ""
        raise BadInput(f"torchrun environment: {name}={value}; expected {low} <= {name}{bound}")
    return value


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's RANK / WORLD_SIZE / LOCAL_RANK; (0, 1, 0) without them.

    Reads the environment only; no process group is started. An environment torchrun would not set is
    `BadInput` naming the variable: a value that is not an integer or out of range (0 <= RANK <
    WORLD_SIZE, 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE, 1 <= MASTER_PORT < 65536), or
    WORLD_SIZE > 1 without RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (the process group would wait
    for ranks no launcher started).
    """
    world = _env_int("WORLD_SIZE", 1, low=1)
    if world > 1:
        missing = [name for name in RENDEZVOUS if not os.environ.get(name)]
        if missing:
            raise BadInput(
                f"torchrun environment: WORLD_SIZE={world} without {', '.join(missing)}; "
                "start every rank with torchrun, or unset WORLD_SIZE for one process"
            )
        _env_int("MASTER_PORT", 0, low=1, below=("65536", 65536))
    rank = _env_int("RANK", 0, low=0, below=("WORLD_SIZE", world))
    local_world = _env_int("LOCAL_WORLD_SIZE", world, low=1, below=("WORLD_SIZE + 1", world + 1))
    return rank, world, _env_int("LOCAL_RANK", 0, low=0, below=("LOCAL_WORLD_SIZE", local_world))


def start_group(backend: str, world: int) -> None:
    """Start the default process group; when the `world` ranks have not formed it within
    `RENDEZVOUS_TIMEOUT` (a rank never started, a wrong MASTER_ADDR/MASTER_PORT), `BadInput` naming them."""
    try:
        torch.distributed.init_process_group(backend, timeout=RENDEZVOUS_TIMEOUT)
    except torch.distributed.DistError as err:
        where = f"MASTER_ADDR:MASTER_PORT {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise BadInput(
            f"torchrun environment: the {world} ranks did not meet at {where} within "
            f"{RENDEZVOUS_TIMEOUT.total_seconds():.0f} s ({err}); start every rank with torchrun"
        ) from err


def distributed() -> tuple[int, int, int]:
    """`torchrun_env()`, with a gloo process group started when there is more than one process.

    The group is used only for a final barrier (`finish_distributed`): ranks share no tensors, each encodes
    its own shards.
    """
    rank, world, local_rank = torchrun_env()
    if world > 1 and not torch.distributed.is_initialized():
        start_group("gloo", world)
    return rank, world, local_rank


def finish_distributed() -> None:
    """Wait until every rank is here (for up to `FINISH_TIMEOUT`), then end the process group."""
    torch.distributed.monitored_barrier(timeout=FINISH_TIMEOUT)
    torch.distributed.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' → cuda:local_rank when CUDA is present, else cpu; anything else must be valid and available."""
    if name == "auto" and torch.cuda.is_available() and local_rank >= torch.cuda.device_count():
        raise BadInput(
            f"torchrun environment: LOCAL_RANK={local_rank}, "
            f"but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BadInput(f"device '{name}': {err}; use auto, cpu or cuda[:N]") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device '{name}': CUDA is not available on this machine; use auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BadInput(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA device(s), from cuda:0")
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
