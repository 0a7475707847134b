"""Atomic checkpoint files and the resumable training state shared by both trainers.

A trainer here has `loss`, `optimizer`, `scheduler`, `scaler`, `device`, `epoch`, `history`,
`best_rsum`, `best_epoch` and `bad_epochs`; its weights are saved by the trainer itself.
"""

from pathlib import Path

import torch


def save_atomic(payload: dict, path: Path) -> None:
    """`torch.save` to a temporary name, then rename: a kill never leaves a half-written file."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def resumable_state(trainer) -> dict:
    """Everything besides the weights that an exact resume needs: optimiser, schedule, RNG, progress."""
    return {
        "loss": trainer.loss.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if trainer.device.type == "cuda" else None,
        "best": (trainer.best_rsum, trainer.best_epoch, trainer.bad_epochs),
        "epoch": trainer.epoch,
        "history": trainer.history,
    }


def restore_resumable_state(trainer, state: dict) -> None:
    """The inverse of `resumable_state` (weights are loaded by the caller)."""
    trainer.loss.load_state_dict(state["loss"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"].cpu())
    if state["cuda_rng"] is not None and trainer.device.type == "cuda":
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    trainer.best_rsum, trainer.best_epoch, trainer.bad_epochs = state["best"]
    trainer.epoch, trainer.history = state["epoch"], state["history"]
