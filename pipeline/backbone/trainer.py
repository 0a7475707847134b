"""The backbone training loop: encoder + loss against frozen caption embeddings, checkpoints, exact resume.

Each epoch shows every training image once, with one of its captions drawn at random; a step
accumulates `accumulation_steps` micro-batches, clips the gradient norm and advances the cosine
schedule. Validation R@K (the head pipeline's `retrieval_metrics`) runs every epoch on un-augmented
images. `last.pt` holds everything needed to continue exactly; `best.pt` (best validation rsum) holds
only the encoder and its architecture, which `xalign encode --image-model PATH` loads.
"""

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from encoding.backbones.checkpoint import CHECKPOINT_FORMAT, ImageEncoder, eval_transform
from encoding.runtime import autocast, resolve_device, resolve_precision
from pipeline import losses
from pipeline.backbone.config import BackboneConfig
from pipeline.backbone.data import SplitImages, image_loader, plan_epoch, train_transform
from pipeline.checkpointing import restore_resumable_state, resumable_state, save_atomic
from pipeline.data import SplitTensors
from pipeline.engine import NonFiniteLoss, cosine_with_warmup, parameter_groups
from pipeline.metrics import retrieval_metrics
from pipeline.plots import training_curves


class BackboneTrainer:
    """Trains `config`'s image encoder on the `train` split against its caption embeddings; validates on `val`."""

    def __init__(self, config: BackboneConfig, train: SplitTensors, val: SplitTensors, out_dir: Path | None = None):
        self.config, t = config, config.training
        self.device = resolve_device(t.device)
        self.precision = resolve_precision(t.precision, self.device)
        self.train, self.val = train, val
        self.architecture = config.architecture(output_dim=train.dims[1])
        torch.manual_seed(t.seed)
        self.encoder = ImageEncoder(**self.architecture).to(self.device)
        options = {k: v for k, v in vars(config.loss).items() if k != "type"}
        self.loss = losses.build(config.loss.type, **options, learnable_temperature=t.learnable_temp).to(self.device)
        self.optimizer = torch.optim.AdamW(
            parameter_groups([self.encoder, self.loss], t.weight_decay), lr=t.learning_rate
        )
        self.train_images = SplitImages(train.image_paths, train_transform(config.model, config.augment), t.seed)
        num_images = int((torch.bincount(train.caption_image_index, minlength=len(train.image_paths)) > 0).sum())
        self.micro_batches = max(1, num_images // t.batch_size)
        self.steps_per_epoch = math.ceil(self.micro_batches / t.accumulation_steps)
        total = self.steps_per_epoch * t.num_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_with_warmup(t.warmup_steps, total))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.history: list[dict] = []
        self.epoch, self.best_rsum, self.best_epoch, self.bad_epochs = 0, -1.0, -1, 0
        self.writer = None

    def trainable_parameters(self) -> int:
        return sum(p.numel() for m in (self.encoder, self.loss) for p in m.parameters() if p.requires_grad)

    def batch_loss(self, pixels: torch.Tensor, captions: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Loss of (B, 3, H, W) pixels against (B, D_txt) frozen caption embeddings."""
        with autocast(self.device, self.precision):
            image_features = self.encoder(pixels.to(self.device, non_blocking=True))
        text_features = F.normalize(captions.to(self.device).float(), dim=-1)
        return self.loss(F.normalize(image_features.float(), dim=-1), text_features, rows.to(self.device))

    def optimizer_step(self) -> None:
        if self.config.training.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.training.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training images → mean micro-batch loss."""
        t = self.config.training
        self.encoder.train(), self.loss.train()
        plan = plan_epoch(self.train.caption_image_index, len(self.train.image_paths), t.seed, epoch)
        self.train_images.epoch = epoch
        drop_last = len(plan.image_rows) >= t.batch_size
        loader = image_loader(
            self.train_images,
            plan.image_rows,
            t.batch_size,
            self.config.data.num_workers,
            drop_last,
            self.device.type == "cuda",
        )
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for index, (rows, pixels) in enumerate(tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None)):
            group_start = index - index % t.accumulation_steps
            group = min(t.accumulation_steps, self.micro_batches - group_start)
            captions = self.train.text[plan.caption_rows[index * t.batch_size : index * t.batch_size + len(rows)]]
            loss = self.batch_loss(pixels, captions, rows)
            self.scaler.scale(loss / group).backward()
            total += loss.item()
            if index + 1 - group_start == group:
                self.optimizer_step()
        mean = total / self.micro_batches
        if not math.isfinite(mean):
            raise NonFiniteLoss(f"epoch {epoch}: training loss is {mean}")
        return mean

    @torch.no_grad()
    def embed_images(self, paths) -> torch.Tensor:
        """(N,) image paths → (N, D) L2-normalised embeddings, un-augmented."""
        self.encoder.eval()
        m = self.config.model
        images = SplitImages(paths, eval_transform(m.image_size, m.mean, m.std))
        loader = image_loader(
            images,
            range(len(images)),
            self.config.training.eval_batch_size,
            self.config.data.num_workers,
            False,
            self.device.type == "cuda",
        )
        parts = []
        for _, pixels in loader:
            with autocast(self.device, self.precision):
                parts.append(F.normalize(self.encoder(pixels.to(self.device)).float(), dim=-1).cpu())
        return torch.cat(parts)

    def evaluate(self, split: SplitTensors) -> dict:
        """Retrieval metrics of `split`: trained image embeddings against its frozen caption embeddings."""
        text = F.normalize(split.text.float(), dim=-1)
        return retrieval_metrics(self.embed_images(split.image_paths), text, split.caption_image_index)

    def run(self) -> list[dict]:
        """Train until `num_epochs` or early stopping; returns the history (one record per epoch)."""
        t = self.config.training
        self.writer = self.open_tensorboard()
        while self.epoch < t.num_epochs and self.bad_epochs < t.patience:
            start = time.perf_counter()
            train_loss = self.train_epoch(self.epoch)
            metrics = self.evaluate(self.val)
            record = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_rsum": metrics["rsum"],
                **{f"val_{d}_{k}": metrics[d][k] for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10")},
                "lr": self.optimizer.param_groups[0]["lr"],
                "logit_scale": self.loss.scale().item() if hasattr(self.loss, "scale") else None,
                "seconds": time.perf_counter() - start,
            }
            self.end_epoch(record)
        if self.writer is not None:
            self.writer.close()
        return self.history

    def end_epoch(self, record: dict) -> None:
        self.history.append(record)
        improved = record["val_rsum"] > self.best_rsum
        if improved:
            self.best_rsum, self.best_epoch, self.bad_epochs = record["val_rsum"], self.epoch, 0
        else:
            self.bad_epochs += 1
        self.epoch += 1
        print(
            f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, val rsum {record['val_rsum']:.1f} "
            f"(i2t R@1 {record['val_i2t_R@1']:.1f}, t2i R@1 {record['val_t2i_R@1']:.1f}), {record['seconds']:.1f}s"
        )
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and value is not None:
                    self.writer.add_scalar(key, value, record["epoch"])
        if self.out_dir is not None:
            self.save(improved)

    def open_tensorboard(self):
        if not self.config.training.tensorboard or self.out_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("note: training.tensorboard is set but tensorboard is not installed; logging to history.jsonl only")
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def encoder_checkpoint(self) -> dict:
        """What `xalign encode --image-model` needs: format tag, architecture, encoder weights (weights_only-safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "architecture": self.architecture,
            "encoder": self.encoder.state_dict(),
            "config": self.config.to_dict(),
            "epoch": self.epoch,
        }

    def save(self, improved: bool) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if improved:
            save_atomic({**self.encoder_checkpoint(), "val_rsum": self.best_rsum}, self.out_dir / "best.pt")
        save_atomic({**self.encoder_checkpoint(), **resumable_state(self)}, self.out_dir / "last.pt")
        (self.out_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        training_curves(self.history, self.out_dir / "training_curves.png")

    def resume(self) -> None:
        """Continue from `out_dir/last.pt`: same weights, optimizer, schedule, RNG and history."""
        state = torch.load(self.out_dir / "last.pt", map_location=self.device, weights_only=False)
        self.encoder.load_state_dict(state["encoder"])
        restore_resumable_state(self, state)
