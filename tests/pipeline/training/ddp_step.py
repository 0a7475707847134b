"""One engine step on a fixed global batch of 16; rank 0 saves the loss and the updated heads.

Run as `python ddp_step.py CACHE OUT` (one process) or under torchrun (each rank takes its share).
"""

import sys

import torch

from pipeline.config.experiment import from_dict
from pipeline.data.split_tensors import load_splits
from pipeline.training.pooled_heads import HeadTrainer

cache, out = sys.argv[1], sys.argv[2]
config = from_dict(
    {
        "data": {"cache": cache},
        "model": {"type": "mlp", "output_dim": 16, "hidden_dim": 32, "dropout": 0.0},
        "training": {"batch_size": 16, "device": "cpu", "warmup_steps": 0},
    }
)
splits = load_splits(cache, ["train", "val"])
trainer = HeadTrainer(config, splits["train"], splits["val"])
rows, captions = trainer.epoch_order(0)
loss = trainer.train_step((*trainer.batch_inputs(rows[:16], captions[:16]), None))
if trainer.rank == 0:
    torch.save({"loss": loss, "model": trainer.model.state_dict(), "world": trainer.world}, out)
