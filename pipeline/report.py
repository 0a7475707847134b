"""What a finished training run leaves next to its checkpoints: test metrics, figures, cost side."""

import json
import resource
from pathlib import Path

import torch

from pipeline.data import SplitTensors
from pipeline.evaluate import embed_split
from pipeline.metrics import retrieval_metrics
from pipeline.plots import training_curves


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_run(trainer, test: SplitTensors, split_name: str, out_dir: Path) -> dict:
    """Evaluate the trainer's current (best) heads on `test`; write metrics.json, curves and run_info.json."""
    test = test.to(trainer.device)
    image, text = embed_split(trainer.model, test, trainer.config.training.eval_batch_size)
    metrics = {"split": split_name, **retrieval_metrics(image, text, test.caption_image_index)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    training_curves(trainer.history, out_dir / "training_curves.png")
    info = {
        "trainable_parameters": trainer.trainable_parameters(),
        "train_seconds": sum(r["seconds"] for r in trainer.history),
        "epochs": trainer.epoch,
        "best_epoch": trainer.best_epoch,
        "peak_memory_mb": peak_memory_mb(trainer.device),
        "device": str(trainer.device),
        "precision": trainer.precision,
    }
    (out_dir / "run_info.json").write_text(json.dumps(info, indent=2))
    return metrics
