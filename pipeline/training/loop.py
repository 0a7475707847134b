"""The one training loop: epochs, early stopping on val rsum, best/last checkpoints, exact resume,
history, a line per epoch, optional TensorBoard, and a per-epoch hook (Optuna's report/prune).

A mode subclasses `Trainer` and supplies its model and its step:
- `build()` → (model, loss); `micro_batches_per_epoch()`;
- `epoch_batches(epoch)` → the epoch's micro-batches; `batch_loss(batch)` → scalar loss of one;
- `make_run()` → the run object (`pipeline.runs.run.Run`) around its live modules: validation, the test
  report and `evaluate` all embed through that object (`embed(split)`);
- `encode_queries(text)` → (Q, D) embeddings of raw caption inputs (for inference timing; a mode whose
  queries are not pooled vectors overrides `query_search`, and one that re-ranks, `test_metrics`);
- `checkpoint()` → the weights and what rebuilds the model; `load_weights(state, path)`.
A step accumulates `training.accumulation_steps` micro-batches, clips the gradient norm, steps the
optimizer `training.optimizer` names (`training.optimizers`: adamw, lion) and the warmup + cosine schedule, then
clamps the loss's learnable scale in place. Early stopping counts epochs without a better validation rsum
from `training.min_epochs` on.
"""

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from tqdm import tqdm

from encoding.errors import BadInput
from encoding.runtime import resolve_precision
from pipeline.data.split_tensors import SplitTensors
from pipeline.evaluation.metrics import retrieval_metrics
from pipeline.evaluation.rerank import reranked_metrics
from pipeline.reporting.plots import training_curves
from pipeline.runs.run import Run
from pipeline.training.checkpoint import (
    load_checkpoint,
    restore_resumable_state,
    resumable_state,
    save_checkpoint,
)
from pipeline.training.distributed import from_rank0, start_distributed
from pipeline.training.optimizers import build_optimizer

CURVES_INTERVAL_S = 30  # training_curves.png is redrawn at most this often while training
TIMED_QUERIES = 1000  # text queries of the inference timing in run_info.json
log = logging.getLogger(f"xalign.{__name__}")


DIVERGENCE_KEYS = "training.learning_rate, loss.temperature, training.warmup_steps or training.grad_clip"


class NonFiniteLoss(BadInput):
    """The training loss became NaN or infinite: settings the user can change (a sweep prunes the trial)."""


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


def epoch_record(epoch: int, train_loss: float, metrics: dict, lr: float, scale: float, seconds: float) -> dict:
    """One line of history.jsonl."""
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_rsum": metrics["rsum"],
        **{f"val_{d}_{k}": metrics[d][k] for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10")},
        "lr": lr,
        "logit_scale": scale,
        "seconds": seconds,
    }


class Trainer:
    """Trains on `train`, validating on `val` each epoch; writes to `out_dir` when given (rank 0 only)."""

    log_epochs = True  # print a line per epoch (sweeps turn it off)
    reads_train_lazily = False  # True: the train split may be passed without its embeddings (`load_splits(lazy=)`)
    streams_train = False  # set by `build` when the train inputs are read from the shards (run_info.json)

    def __init__(self, config, train: SplitTensors, val: SplitTensors, out_dir: Path | None = None):
        self.config, t = config, config.training
        self.rank, self.world, self.device = start_distributed(t.device)
        if t.batch_size % self.world:
            raise BadInput(f"training.batch_size {t.batch_size} must divide by the {self.world} torchrun processes")
        self._run_model: Run | None = None
        self.precision = resolve_precision(t.precision, self.device)
        self.train, self.val = train, val
        torch.manual_seed(t.seed)
        self.model, self.loss = self.build()
        self.loss.to(self.device)
        self.optimizer = build_optimizer(t, [self.model, self.loss])
        self.micro_batches = self.micro_batches_per_epoch()
        self.steps_per_epoch = math.ceil(self.micro_batches / t.accumulation_steps)
        schedule = cosine_with_warmup(t.warmup_steps, self.steps_per_epoch * t.num_epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.history: list[dict] = []
        self.epoch, self.best_rsum, self.best_epoch, self.bad_epochs = 0, -1.0, -1, 0
        self.curves_at = -math.inf

    # --- what a mode supplies -------------------------------------------------------------------
    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        raise NotImplementedError

    def micro_batches_per_epoch(self) -> int:
        raise NotImplementedError

    def epoch_batches(self, epoch: int) -> Iterator:
        raise NotImplementedError

    def batch_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def make_run(self) -> Run:
        raise NotImplementedError

    def encode_queries(self, text: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def checkpoint(self) -> dict:
        raise NotImplementedError

    def load_weights(self, state: dict, path: Path) -> None:
        raise NotImplementedError

    # --- the loop ------------------------------------------------------------------------------
    def trainable_parameters(self) -> int:
        return sum(p.numel() for m in (self.model, self.loss) for p in m.parameters() if p.requires_grad)

    def progress(self) -> float:
        """Training progress in epochs (optimizer steps taken / steps per epoch)."""
        return self.scheduler.last_epoch / self.steps_per_epoch

    def train_mode(self) -> None:
        """Model and loss in training mode (a mode with locked modules keeps those in eval mode)."""
        self.model.train(), self.loss.train()

    def optimizer_step(self) -> None:
        """Clip, step the optimizer and the schedule, clear the gradients, clamp the loss's scale in place."""
        if self.config.training.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.training.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.loss.clamp_()

    def train_step(self, batch) -> torch.Tensor:
        """One optimizer step on one micro-batch; the detached loss."""
        loss = self.batch_loss(batch)
        self.scaler.scale(loss).backward()
        self.optimizer_step()
        return loss.detach()

    def train_epoch(self, epoch: int, max_batches: int | None = None) -> float:
        """Mean micro-batch loss of one epoch (or of its first `max_batches` micro-batches)."""
        accumulate = self.config.training.accumulation_steps
        self.train_mode()
        count = self.micro_batches if max_batches is None else min(max_batches, self.micro_batches)
        batches = islice(self.epoch_batches(epoch), count)
        total = torch.zeros((), device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(tqdm(batches, total=count, desc=f"epoch {epoch}", leave=False, disable=None)):
            group_start = index - index % accumulate
            group = min(accumulate, count - group_start)
            loss = self.batch_loss(batch)
            self.scaler.scale(loss / group).backward()
            total += loss.detach()
            if index + 1 - group_start == group:
                self.optimizer_step()
        mean = total.item() / count
        if not math.isfinite(mean):
            raise NonFiniteLoss(
                f"epoch {epoch}: training loss is {mean}; the run diverged: check {DIVERGENCE_KEYS} "
                "(a lower learning rate usually helps)"
            )
        return mean

    @property
    def run_model(self) -> Run:
        """The run object of the current weights (built once; it holds the live modules)."""
        if self._run_model is None:
            self._run_model = self.make_run()
        return self._run_model

    def embed(self, split: SplitTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) image and (M, D) caption embeddings of `split`, fp32, L2-normalised (through the run object)."""
        return self.run_model.embed_split(split)[:2]

    def evaluate(self, split: SplitTensors) -> dict:
        """Retrieval metrics of `split` (fp32 embeddings)."""
        return self.test_metrics(split, *self.embed(split))

    def test_metrics(self, split: SplitTensors, image: torch.Tensor, text: torch.Tensor) -> dict:
        """Retrieval metrics of a split's (N, D) image and (M, D) caption embeddings; a run that scores pairs
        re-ranks the dual top K with its match logits."""
        run, index = self.run_model, split.caption_image_index.to(image.device)
        if run.scores_pairs:
            return reranked_metrics(image, text, index, run.rerank_k, run.pair_scorer(split))
        return retrieval_metrics(image, text, index)

    def query_search(self, test: SplitTensors, gallery: torch.Tensor, k: int = 10) -> Callable[[], object]:
        """A closure that embeds 1,000 test captions (repeating when there are fewer) and takes their top K of
        the (N, D) `gallery`: what `run_info.json`'s inference time measures."""
        queries = test.text[torch.arange(TIMED_QUERIES) % len(test.text)].to(self.device)
        k = min(k, len(gallery))
        return lambda: (self.encode_queries(queries) @ gallery.T).topk(k, dim=1)

    def run(self, on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
        """Train until `num_epochs` or early stopping; `on_epoch_end(epoch, record)` may raise to stop."""
        t, start = self.config.training, time.perf_counter()
        writer = self.open_tensorboard()
        try:
            while self.epoch < t.num_epochs and self.bad_epochs < t.patience:
                epoch_start = time.perf_counter()
                train_loss = self.train_epoch(self.epoch)
                metrics = from_rank0(self.evaluate(self.val))
                lr = self.optimizer.param_groups[0]["lr"]
                seconds = time.perf_counter() - epoch_start
                record = epoch_record(self.epoch, train_loss, metrics, lr, self.loss.scale().item(), seconds)
                self.end_epoch(record, writer)
                if on_epoch_end is not None:
                    on_epoch_end(record["epoch"], record)
        finally:
            if writer is not None:
                writer.close()
        return TrainResult(self.best_rsum, self.best_epoch, self.epoch, self.history, time.perf_counter() - start)

    def end_epoch(self, record: dict, writer=None) -> None:
        """Book-keeping after an epoch: history, early-stopping state, checkpoints, the epoch line, TensorBoard."""
        self.history.append(record)
        improved = record["val_rsum"] > self.best_rsum
        if improved:
            self.best_rsum, self.best_epoch, self.bad_epochs = record["val_rsum"], self.epoch, 0
        elif self.epoch >= self.config.training.min_epochs:
            self.bad_epochs += 1
        self.epoch += 1
        if self.rank != 0:
            return
        if self.log_epochs:
            log.info(self.epoch_line(record))
        if writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    writer.add_scalar(key, value, record["epoch"])
        if self.out_dir is not None:
            self.save(improved)

    def epoch_line(self, record: dict) -> str:
        return (
            f"epoch {record['epoch'] + 1}/{self.config.training.num_epochs}  loss {record['train_loss']:.4f}  "
            f"val rsum {record['val_rsum']:.1f}  R@1 i2t/t2i {record['val_i2t_R@1']:.1f}/{record['val_t2i_R@1']:.1f}  "
            f"{record['seconds']:.1f} s"
        )

    def open_tensorboard(self):
        if not self.config.training.tensorboard or self.out_dir is None or self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def save(self, improved: bool) -> None:
        """best.pt (when improved), last.pt (resumable), history.jsonl, and the curves every CURVES_INTERVAL_S."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if improved:
            save_checkpoint({**self.checkpoint(), "val_rsum": self.best_rsum}, self.out_dir / "best.pt")
        save_checkpoint({**self.checkpoint(), **resumable_state(self)}, self.out_dir / "last.pt")
        (self.out_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        if time.monotonic() - self.curves_at >= CURVES_INTERVAL_S:
            training_curves(self.history, self.out_dir / "training_curves.png")
            self.curves_at = time.monotonic()

    def resume(self, verify: bool = True) -> None:
        """Continue from `out_dir/last.pt`: same weights, optimizer, schedule, queues, RNG and history.
        `verify`: check the file's recorded sha256."""
        path = self.out_dir / "last.pt"
        state = load_checkpoint(path, self.device, verify)
        self.load_weights(state, path)
        restore_resumable_state(self, state, path)

    def load_best(self) -> None:
        """The weights of `out_dir/best.pt` (the best validation epoch)."""
        path = self.out_dir / "best.pt"
        self.load_weights(load_checkpoint(path, self.device), path)
