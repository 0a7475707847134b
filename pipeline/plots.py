"""Figures written next to a run: training curves (loss, validation R@K, learning rate)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(history: list[dict], path: Path) -> Path:
    """Three panels over epochs: training loss, validation R@1/R@10 both ways, learning rate."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=100)
    axes[0].plot(epochs, [r["train_loss"] for r in history], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    for key in ("val_i2t_R@1", "val_i2t_R@10", "val_t2i_R@1", "val_t2i_R@10"):
        axes[1].plot(epochs, [r[key] for r in history], marker=".", label=key.removeprefix("val_"))
    axes[1].set(title="validation recall (%)", xlabel="epoch")
    axes[1].legend()
    axes[2].plot(epochs, [r["lr"] for r in history], marker=".")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
