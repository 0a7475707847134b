"""Training-step throughput of backbone mode (`xalign backbone-train CONFIG --bench`), as one JSON object.

Three loops, one after another in one process, each after a warm-up step:
- `step_images_per_s`: forward + backward + optimizer step on one batch already on the device (the model's limit);
- `loader_images_per_s`: decoding + augmentation through the DataLoader workers alone;
- `pipeline_images_per_s`: real training steps fed by the loader; `pipeline_vs_step` is its ratio to the limit.
"""

import time

import torch

from pipeline.backbone.data import image_loader, plan_epoch
from pipeline.backbone.trainer import BackboneTrainer


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    run()
    _synchronize(device)
    return time.perf_counter() - start


def _train_step(trainer: BackboneTrainer, rows, pixels, captions) -> None:
    trainer.batch_loss(pixels, captions, rows).backward()
    trainer.optimizer_step()


def bench_training_step(trainer: BackboneTrainer, steps: int = 10) -> dict:
    """Images per second of the three loops over `steps` batches of `training.batch_size` (warm-up excluded)."""
    t, device = trainer.config.training, trainer.device
    trainer.encoder.train()
    plan = plan_epoch(trainer.train.caption_image_index, len(trainer.train.image_paths), t.seed, 0)
    batch = min(t.batch_size, len(plan.image_rows))
    order = [plan.image_rows[i % len(plan.image_rows)] for i in range((steps + 1) * batch)]
    captions = trainer.train.text[plan.caption_rows[:batch]]

    def loader():
        return image_loader(trainer.train_images, order, batch, trainer.config.data.num_workers, True, False)

    rows, pixels = next(iter(loader()))
    pixels = pixels.to(device)
    _train_step(trainer, rows, pixels, captions)  # warm-up
    step_s = _timed(lambda: [_train_step(trainer, rows, pixels, captions) for _ in range(steps)], device)

    def timed_batches(per_batch) -> float:
        """Seconds for the loader's batches after the first (which includes the workers' start-up)."""
        batches = iter(loader())
        next(batches)
        return _timed(lambda: [per_batch(*b) for b in batches], device)

    loader_s = timed_batches(lambda r, p: None)
    pipeline_s = timed_batches(lambda r, p: _train_step(trainer, r, p, captions))
    images = steps * batch
    return {
        "step_images_per_s": images / step_s,
        "loader_images_per_s": images / loader_s,
        "pipeline_images_per_s": images / pipeline_s,
        "pipeline_vs_step": step_s / pipeline_s,
        "device": str(device),
        "precision": trainer.precision,
        "batch_size": batch,
        "steps": steps,
        "num_workers": trainer.config.data.num_workers,
        "image_size": trainer.config.model.image_size,
        "arch": f"{trainer.config.model.library}:{trainer.config.model.arch}",
        "trainable_parameters": trainer.trainable_parameters(),
        "torch_threads": torch.get_num_threads(),
    }
