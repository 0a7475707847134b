"""Local weight files: the digest that identifies them in metadata, and loading one into a model."""

import hashlib
from pathlib import Path

import torch
from torch import nn

from encoding.errors import BadInput

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}


def weights_digest(path: Path) -> str:
    """sha256 of a weights file, or of the sorted weight files of a directory (first 16 hex digits)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_trunk_weights(model: nn.Module, path: Path | str, where: str) -> None:
    """Load a local state dict (`weights_only`) saved from the same architecture into `model`.

    Classifier weights may be absent from `model` or from the file; any other missing weight, or a
    shape that does not fit, is `BadInput` prefixed with `where` (the flag or config key that named it).
    """
    if not Path(path).is_file():
        raise BadInput(f"{where}: weights file '{path}' not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        missing = model.load_state_dict(state, strict=False).missing_keys
    except RuntimeError as err:  # shape mismatches
        raise BadInput(f"{where}: '{path}' does not fit this architecture ({err})") from err
    if missing:
        raise BadInput(f"{where}: '{path}' lacks weights of this architecture, e.g. {missing[:3]}")
