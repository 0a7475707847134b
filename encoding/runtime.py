"""Device, precision and library-version helpers shared by encoding and training."""

import contextlib
import importlib.metadata

import torch

from encoding.errors import BadInput

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when present, else cpu; anything else must be a valid, available device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


def library_versions() -> dict:
    versions = {}
    for package in ("torch", "transformers", "open_clip_torch", "sentence-transformers", "timm"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions
