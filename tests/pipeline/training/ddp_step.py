"""One engine step on the first global batch of 16; rank 0 saves the loss and the updated heads.

Run as `python ddp_step.py CACHE OUT [stream]` (one process) or under torchrun (each rank takes its share;
with `stream`, each rank reads only its share of the rows from the shards).
"""

import sys

import torch

from pipeline.config.experiment import from_dict
from pipeline.data.split_tensors import load_splits
from pipeline.training.pooled_heads import HeadTrainer

cache, out = sys.argv[1], sys.argv[2]
stream = sys.argv[3:] == ["stream"]
config = from_dict(
    {
        "data": {"cache": cache, "stream": stream},
        "model": {"type": "mlp", "output_dim": 16, "hidden_dim": 32, "dropout": 0.0},
        "training": {"batch_size": 16, "device": "cpu", "warmup_steps": 0},
    }
)
splits = load_splits(cache, ["train", "val"], lazy=("train",))
trainer = HeadTrainer(config, splits["train"], splits["val"])
batches = trainer.epoch_batches(0)
loss = trainer.train_step(next(batches))
batches.close()
if trainer.rank == 0:
    saved = {
        "loss": loss,
        "model": trainer.model.state_dict(),
        "world": trainer.world,
        "streamed": trainer.streams_train,
    }
    torch.save(saved, out)
