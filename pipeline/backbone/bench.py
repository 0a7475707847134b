"""Training-step throughput of backbone mode (`xalign backbone-train CONFIG --bench`), as one JSON object.

Three loops, one after another in one process, each after a warm-up step:
- `step_images_per_s`: forward + backward + optimizer step on one batch already on the device (the model's limit);
- `loader_images_per_s`: decoding + augmentation through the DataLoader workers alone;
- `pipeline_images_per_s`: real training steps fed by the loader; `pipeline_vs_step` is its ratio to the limit.
"""

import torch

from encoding.runtime import timed
from pipeline.backbone.trainer import BackboneTrainer


def bench_training_step(trainer: BackboneTrainer, steps: int = 10) -> dict:
    """Images per second of the three loops over `steps` batches of `training.batch_size` (warm-up excluded)."""
    t, device = trainer.config.training, trainer.device
    trainer.model.train()
    rows, caption_rows = trainer.sampler.order(0)
    batch = min(t.batch_size, len(rows))
    order = [rows[i % len(rows)] for i in range((steps + 1) * batch)]
    captions = trainer.train.text[caption_rows[:batch]]

    def loader():
        return trainer.loader(trainer.train_images, order, batch, True)

    image_rows, pixels = next(iter(loader()))
    ready = (pixels.to(device), captions, image_rows)
    trainer.train_step(ready)  # warm-up
    step_s = timed(lambda: [trainer.train_step(ready) for _ in range(steps)], device)

    def timed_batches(per_batch) -> float:
        """Seconds for the loader's batches after the first (which includes the workers' start-up)."""
        batches = iter(loader())
        next(batches)
        return timed(lambda: [per_batch(r, p) for r, p in batches], device)

    loader_s = timed_batches(lambda r, p: None)
    pipeline_s = timed_batches(lambda r, p: trainer.train_step((p, captions, r)))
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
