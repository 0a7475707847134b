"""The training engine: heads + loss stepping over tensors held in memory (on the GPU when present).

Each epoch draws batches from index permutations (every image once with one random caption, or
every caption once); there is no per-sample Dataset or DataLoader in the hot loop. Validation R@K
runs every epoch; early stopping watches the validation rsum. With an output directory the engine
keeps `best.pt`, `last.pt` and `history.jsonl`, and `resume=True` continues exactly where
`last.pt` left off.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from encoding.runtime import autocast, resolve_device, resolve_precision
from pipeline import heads, losses
from pipeline.config import ExperimentConfig
from pipeline.data import SplitTensors
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
    loss = losses.build(
        lc.type,
        **{k: v for k, v in vars(lc).items() if k != "type"},
        learnable_temperature=m.learnable_temp,
        momentum=m.momentum,
        model=model,
    )
    return model, loss


def parameter_groups(modules, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases, norms and scalar temperatures."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Trains `config`'s heads on `train`, validating on `val` each epoch."""

    def __init__(self, config: ExperimentConfig, train: SplitTensors, val: SplitTensors, out_dir: Path | None = None):
        self.config, t = config, config.training
        self.device = resolve_device(t.device)
        self.precision = resolve_precision(t.precision, self.device)
        self.train, self.val = train.to(self.device), val.to(self.device)
        torch.manual_seed(t.seed)
        self.model, self.loss = build_model_and_loss(config, *train.dims)
        self.model.to(self.device), self.loss.to(self.device)
        self.forward = torch.compile(self.model) if t.compile else self.model
        self.optimizer = torch.optim.AdamW(
            parameter_groups([self.model, self.loss], t.weight_decay), lr=t.learning_rate
        )
        counts = torch.bincount(self.train.caption_image_index, minlength=len(self.train.image))
        self.images_with_captions = torch.nonzero(counts > 0).squeeze(1)
        self.caption_table_offsets = torch.cumsum(counts, 0) - counts
        self.caption_counts = counts
        self.caption_order = torch.argsort(self.train.caption_image_index, stable=True)
        samples = len(self.images_with_captions) if t.epoch_sampling == "image" else len(self.train.text)
        self.steps_per_epoch = max(1, samples // t.batch_size) if samples >= t.batch_size else 1
        total = self.steps_per_epoch * t.num_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_with_warmup(t.warmup_steps, total))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.history: list[dict] = []
        self.epoch, self.best_rsum, self.best_epoch, self.bad_epochs = 0, -1.0, -1, 0

    def trainable_parameters(self) -> int:
        return sum(p.numel() for m in (self.model, self.loss) for p in m.parameters() if p.requires_grad)

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(S,) image rows and (S,) caption rows of one epoch, from a generator seeded by (seed, epoch)."""
        g = torch.Generator().manual_seed(self.config.training.seed * 1_000_003 + epoch)
        if self.config.training.epoch_sampling == "caption":
            captions = torch.randperm(len(self.train.text), generator=g).to(self.device)
            return self.train.caption_image_index[captions], captions
        rows = self.images_with_captions[torch.randperm(len(self.images_with_captions), generator=g).to(self.device)]
        pick = (torch.rand(len(rows), generator=g).to(self.device) * self.caption_counts[rows]).long()
        return rows, self.caption_order[self.caption_table_offsets[rows] + pick]

    def train_epoch(self, epoch: int) -> float:
        t = self.config.training
        self.model.train()
        rows, captions = self.epoch_order(epoch)
        total = torch.zeros((), device=self.device)
        for step in tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch}", leave=False, disable=None):
            batch = slice(step * t.batch_size, (step + 1) * t.batch_size)
            image_rows = rows[batch]
            with autocast(self.device, self.precision):
                image_features, text_features = self.forward(
                    self.train.image[image_rows], self.train.text[captions[batch]]
                )
                loss = self.loss(image_features.float(), text_features.float(), image_rows)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]], t.grad_clip
                )
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total += loss.detach()
        mean = total.item() / self.steps_per_epoch
        if not math.isfinite(mean):
            raise NonFiniteLoss(f"epoch {epoch}: training loss is {mean}")
        return mean

    @torch.no_grad()
    def embed(self, split: SplitTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) image and (M, D) caption embeddings of `split` in the shared space."""
        self.model.eval()
        size = self.config.training.eval_batch_size
        with autocast(self.device, self.precision):
            image = torch.cat(
                [self.model.encode_image(split.image[i : i + size]).float() for i in range(0, len(split.image), size)]
            )
            text = torch.cat(
                [self.model.encode_text(split.text[i : i + size]).float() for i in range(0, len(split.text), size)]
            )
        return image, text

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
                "logit_scale": self.loss.scale().item() if hasattr(self.loss, "scale") else None,
                "seconds": time.perf_counter() - epoch_start,
            }
            self.history.append(record)
            improved = metrics["rsum"] > self.best_rsum
            if improved:
                self.best_rsum, self.best_epoch, self.bad_epochs = metrics["rsum"], self.epoch, 0
            else:
                self.bad_epochs += 1
            self.epoch += 1
            if self.out_dir is not None:
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
            _save_atomic({**self.state(), "val_rsum": self.best_rsum}, self.out_dir / "best.pt")
        _save_atomic(
            {
                **self.state(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "best": (self.best_rsum, self.best_epoch, self.bad_epochs),
                "history": self.history,
            },
            self.out_dir / "last.pt",
        )
        lines = "".join(json.dumps(record) + "\n" for record in self.history)
        (self.out_dir / "history.jsonl").write_text(lines)

    def resume(self) -> None:
        """Continue from `out_dir/last.pt`: same weights, optimizer, schedule, RNG and history."""
        state = torch.load(self.out_dir / "last.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"].cpu())
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.best_rsum, self.best_epoch, self.bad_epochs = state["best"]
        self.epoch, self.history = state["epoch"], state["history"]


def _save_atomic(payload: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
