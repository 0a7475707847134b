"""The training engine: heads + loss stepping over tensors held in memory (on the GPU when present and they fit).

Each epoch draws batches from index permutations (`data.EpochSampler`: every image once with one
random caption, or every caption once); there is no per-sample Dataset or DataLoader in the hot loop.
A step: gather the batch rows, optional latent mixup (FuseMix), heads under autocast (bf16/fp16 on
CUDA, fp32 on CPU), loss in fp32 on the features gathered from every rank, backward, gradient
clipping, AdamW, cosine schedule. Validation R@K runs every epoch; early stopping watches the
validation rsum. With an output directory the engine keeps `best.pt`, `last.pt` and `history.jsonl`,
and `resume()` continues exactly where `last.pt` left off.

Under torchrun each rank takes its 1/W share of every global batch (`training.batch_size` is the
global batch), the loss sees the features of all ranks (`losses.gather`), and the heads' gradients
are summed over ranks, so a step equals the single-process step on the global batch.
"""

import inspect
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from encoding.errors import BadInput
from encoding.runtime import autocast, resolve_device, resolve_precision
from pipeline import heads, losses
from pipeline.checkpointing import restore_resumable_state, resumable_state, save_atomic
from pipeline.config import ExperimentConfig
from pipeline.data import EpochSampler, SplitTensors, fits_on
from pipeline.losses.gather import allreduce_sum_hook, gather_features
from pipeline.losses.mixing import fusemix
from pipeline.metrics import retrieval_metrics


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    best_rsum: float
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def cosine_with_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup to 1, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_model_and_loss(config: ExperimentConfig, image_dim: int, text_dim: int):
    """The head pair and the loss module a config asks for (dims come from the cache)."""
    m, lc = config.model, config.loss
    model = heads.build(m.type, image_dim, text_dim, **{k: v for k, v in vars(m).items() if k != "type"})
    options = {k: v for k, v in vars(lc).items() if k != "type"}
    loss = losses.build(lc.type, **options, learnable_temperature=m.learnable_temp)
    return model, loss


def parameter_groups(modules, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases, norms and scalar temperatures."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def start_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun starts the process group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", 0)), world, device


class Trainer:
    """Trains `config`'s heads on `train`, validating on `val` each epoch."""

    def __init__(self, config: ExperimentConfig, train: SplitTensors, val: SplitTensors, out_dir: Path | None = None):
        self.config, t = config, config.training
        self.rank, self.world, self.device = start_distributed(t.device)
        if t.batch_size % self.world:
            raise BadInput(f"training.batch_size {t.batch_size} must divide by the {self.world} torchrun processes")
        self.precision = resolve_precision(t.precision, self.device)
        self.train = train.to(self.device) if fits_on(train, self.device) else train
        self.val = val.to(self.device) if fits_on(val, self.device) else val
        torch.manual_seed(t.seed)
        self.model, self.loss = build_model_and_loss(config, *train.dims)
        self.model.to(self.device), self.loss.to(self.device)
        self.forward = self._wrap(self.model)
        self.loss_takes_momentum = "momentum_features" in inspect.signature(self.loss.forward).parameters
        self.optimizer = torch.optim.AdamW(
            parameter_groups([self.model, self.loss], t.weight_decay), lr=t.learning_rate
        )
        self.sampler = EpochSampler(train.caption_image_index, len(train.image), t.epoch_sampling, t.seed, self.device)
        self.batch_size = min(t.batch_size, len(self.sampler))
        self.steps_per_epoch = max(1, len(self.sampler) // self.batch_size)
        total = self.steps_per_epoch * t.num_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_with_warmup(t.warmup_steps, total))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.history: list[dict] = []
        self.epoch, self.best_rsum, self.best_epoch, self.bad_epochs = 0, -1.0, -1, 0

    def _wrap(self, model: torch.nn.Module):
        """The callable a training step runs: DDP (summing gradients) under torchrun, compiled on request."""
        if self.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            model.register_comm_hook(None, allreduce_sum_hook)
        return torch.compile(model) if self.config.training.compile else model

    def trainable_parameters(self) -> int:
        return sum(p.numel() for m in (self.model, self.loss) for p in m.parameters() if p.requires_grad)

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(S,) image rows and (S,) caption rows of one epoch (the same on every rank)."""
        return self.sampler.order(epoch)

    def batch_inputs(self, image_rows: torch.Tensor, caption_rows: torch.Tensor):
        """This rank's share of a global batch: (b, D_img) images, (b, D_txt) captions, (b,) image rows."""
        share = len(image_rows) // self.world
        mine = slice(self.rank * share, (self.rank + 1) * share)
        image_rows, caption_rows = image_rows[mine], caption_rows[mine]
        source = self.train.image.device
        image = self.train.image[image_rows.to(source)].to(self.device, non_blocking=True)
        text = self.train.text[caption_rows.to(source)].to(self.device, non_blocking=True)
        return image, text, image_rows

    def train_step(self, image: torch.Tensor, text: torch.Tensor, image_ids: torch.Tensor, mixup=None) -> torch.Tensor:
        """One optimiser step on this rank's (b, D_img) images and (b, D_txt) captions; the detached loss."""
        t = self.config.training
        if self.config.loss.mixup_alpha > 0:
            alpha, count = self.config.loss.mixup_alpha, len(self.train.image)
            image, text, image_ids = fusemix(image, text, image_ids, count, alpha, mixup)
        with autocast(self.device, self.precision):
            image_features, text_features = self.forward(image, text)
        extra = {}
        if self.loss_takes_momentum:
            momentum = self.model.momentum_features(image, text)
            extra["momentum_features"] = None if momentum is None else tuple(gather_features(f) for f in momentum)
        loss = self.loss(
            gather_features(image_features.float()),
            gather_features(text_features.float()),
            gather_features(image_ids),
            **extra,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if t.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def train_epoch(self, epoch: int, max_steps: int | None = None) -> float:
        """Mean training loss of one epoch (or of its first `max_steps` steps)."""
        self.model.train()
        rows, captions = self.epoch_order(epoch)
        mixup = self.sampler.generator(epoch, stream=1)
        steps = self.steps_per_epoch if max_steps is None else min(max_steps, self.steps_per_epoch)
        total = torch.zeros((), device=self.device)
        for step in tqdm(range(steps), desc=f"epoch {epoch}", leave=False, disable=None):
            batch = slice(step * self.batch_size, (step + 1) * self.batch_size)
            total += self.train_step(*self.batch_inputs(rows[batch], captions[batch]), mixup=mixup)
        mean = total.item() / steps
        if not math.isfinite(mean):
            raise NonFiniteLoss(f"epoch {epoch}: training loss is {mean}")
        return mean

    @torch.no_grad()
    def embed(self, split: SplitTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) image and (M, D) caption embeddings of `split` in the shared space."""
        self.model.eval()
        size = self.config.training.eval_batch_size

        def encode(fn, x):
            with autocast(self.device, self.precision):
                return torch.cat([fn(x[i : i + size].to(self.device)).float() for i in range(0, len(x), size)])

        return encode(self.model.encode_image, split.image), encode(self.model.encode_text, split.text)

    def validate(self) -> dict:
        image, text = self.embed(self.val)
        return retrieval_metrics(image, text, self.val.caption_image_index)

    def run(self, on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
        """Train until `num_epochs` or early stopping; `on_epoch_end(epoch, record)` may raise to stop."""
        t, start = self.config.training, time.perf_counter()
        while self.epoch < t.num_epochs and self.bad_epochs < t.patience:
            epoch_start = time.perf_counter()
            train_loss = self.train_epoch(self.epoch)
            metrics = self.validate()
            record = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_rsum": metrics["rsum"],
                **{f"val_{d}_{k}": metrics[d][k] for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10")},
                "lr": self.optimizer.param_groups[0]["lr"],
                "logit_scale": self.loss.scale().item(),
                "seconds": time.perf_counter() - epoch_start,
            }
            self.history.append(record)
            improved = metrics["rsum"] > self.best_rsum
            if improved:
                self.best_rsum, self.best_epoch, self.bad_epochs = metrics["rsum"], self.epoch, 0
            else:
                self.bad_epochs += 1
            self.epoch += 1
            if self.out_dir is not None and self.rank == 0:
                self.save(improved)
            if on_epoch_end is not None:
                on_epoch_end(record["epoch"], record)
        return TrainResult(self.best_rsum, self.best_epoch, self.epoch, self.history, time.perf_counter() - start)

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "config": self.config.to_dict(),
            "dims": list(self.train.dims),
            "epoch": self.epoch,
        }

    def save(self, improved: bool) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if improved:
            save_atomic({**self.state(), "val_rsum": self.best_rsum}, self.out_dir / "best.pt")
        save_atomic({**self.state(), **resumable_state(self)}, self.out_dir / "last.pt")
        lines = "".join(json.dumps(record) + "\n" for record in self.history)
        (self.out_dir / "history.jsonl").write_text(lines)

    def resume(self) -> None:
        """Continue from `out_dir/last.pt`: same weights, optimizer, schedule, queues, RNG and history."""
        state = torch.load(self.out_dir / "last.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        restore_resumable_state(self, state)
