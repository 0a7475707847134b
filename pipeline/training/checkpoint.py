"""Checkpoint files: written atomically, hashed, read without unpickling, and the resumable training state.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so every load uses
`torch.load(..., weights_only=True)`: a file carrying a pickle payload is refused, never run. Its sha256 is
recorded when it is written and checked when it is loaded (`encoding.checkpoint_hashes`).
"""

from pathlib import Path

import torch

from encoding import checkpoint_hashes
from encoding.atomic import atomic_target
from encoding.cache_checks import sha256_of
from encoding.errors import BadInput


def save_checkpoint(payload: dict, path: Path) -> None:
    """`torch.save` under a temporary name, hash it, then rename: a kill never leaves a half-written file, and
    the file's sha256 is in `checkpoints.json` next to it."""
    path = Path(path)
    with atomic_target(path) as tmp:
        torch.save(payload, tmp)
        digest = sha256_of(tmp)
        checkpoint_hashes.record_pending(path, digest)
    checkpoint_hashes.record_saved(path, digest)


def load_checkpoint(path: Path, device="cpu", verify: bool = True) -> dict:
    """A checkpoint dict written by this project, or BadInput naming the file. `verify`: check its recorded sha256."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: checkpoint not found")
    checkpoint_hashes.verified_sha256(path, verify)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holding objects that would need unpickling
        raise BadInput(f"{path}: not a readable checkpoint of this project ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise BadInput(f"{path}: not a checkpoint of this project (holds a {type(state).__name__})")
    return state


def load_weights(module: torch.nn.Module, state: dict, path: Path) -> None:
    """`module.load_state_dict(state)`, or BadInput naming the file when the architectures differ."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise BadInput(f"{path}: its weights do not fit this model ({str(err).splitlines()[0]})") from err


def resumable_state(trainer) -> dict:
    """Everything besides the weights that an exact resume needs: optimiser, schedule, RNG, progress."""
    return {
        "loss": trainer.loss.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if trainer.device.type == "cuda" else None,
        "best": [trainer.best_rsum, trainer.best_epoch, trainer.bad_epochs],
        "epoch": trainer.epoch,
        "history": trainer.history,
    }


def restore_resumable_state(trainer, state: dict, path: Path) -> None:
    """The inverse of `resumable_state` (weights are loaded by the caller); BadInput naming `path` on a mismatch."""
    try:
        trainer.loss.load_state_dict(state["loss"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"].cpu())
        if state["cuda_rng"] is not None and trainer.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        trainer.best_rsum, trainer.best_epoch, trainer.bad_epochs = state["best"]
        trainer.epoch, trainer.history = state["epoch"], state["history"]
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise BadInput(f"{path}: cannot resume from it ({type(err).__name__}: {err})") from err
