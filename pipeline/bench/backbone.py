"""Training-step throughput of backbone mode (`xalign backbone-train CONFIG --bench`), as one JSON object.

Three loops, one after another in one process, each after a warm-up step:
- `step_images_per_s`: forward + backward + optimizer step on one batch already on the device, decoded
  and tokenised once (the model's limit);
- `loader_images_per_s`: decoding + augmentation (+ tokenisation in two-tower mode) through the DataLoader
  workers alone;
- `pipeline_images_per_s`: real training steps fed by the loader; `pipeline_vs_step` is its ratio to the limit.
"""

import torch

from encoding.runtime import timed
from pipeline.training.backbone import BackboneTrainer


def bench_training_step(trainer: BackboneTrainer, steps: int = 10) -> dict:
    """Images per second of the three loops over `steps` batches of `training.batch_size` (warm-up excluded)."""
    t, device = trainer.config.training, trainer.device
    trainer.train_mode()
    rows, caption_rows = trainer.sampler.order(0)
    batch = min(t.batch_size, len(rows))
    cycle = torch.arange((steps + 1) * batch) % len(rows)

    def batches():
        return trainer.pair_batches(rows[cycle], caption_rows[cycle], batch, True)

    ready = tuple(x.to(device) for x in next(batches()))  # decoded (and tokenised) once, on the device
    trainer.train_step(ready)  # warm-up
    step_s = timed(lambda: [trainer.train_step(ready) for _ in range(steps)], device)

    def timed_batches(per_batch) -> float:
        """Seconds for the loader's batches after the first (which includes the workers' start-up)."""
        stream = batches()
        next(stream)
        return timed(lambda: [per_batch(b) for b in stream], device)

    loader_s = timed_batches(lambda b: None)
    pipeline_s = timed_batches(trainer.train_step)
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
        "text": None if trainer.config.model.text is None else trainer.text_architecture["arch"],
        "trainable_parameters": trainer.trainable_parameters(),
        "torch_threads": torch.get_num_threads(),
    }
