"""Backbone training: an image encoder + loss against frozen caption embeddings, on the one training loop.

Under torchrun each rank decodes its 1/W share of every global batch (`training.batch_size`), the
model runs under DDP with summed gradients, and the loss sees the features gathered from all ranks, so
a step equals the single-process step on the global batch (BatchNorm statistics stay per rank).

Each epoch draws its (image, caption) pairs from `EpochSampler` (a plain permutation); DataLoader
workers decode and augment the images. Validation embeds un-augmented images. `best.pt` holds the
encoder and its architecture (what `xalign encode --image-model PATH` loads); `last.pt` adds the
resumable state.
"""

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from encoding.backbones.image_encoder import CHECKPOINT_FORMAT, ImageEncoder
from encoding.errors import BadInput
from encoding.runtime import autocast
from pipeline import losses
from pipeline.config.backbone import trainable_layers
from pipeline.data.images import SplitImages, image_loader, train_transform
from pipeline.data.split_tensors import EpochSampler
from pipeline.runs.backbone_runs import BackboneRun
from pipeline.training.checkpoint import load_weights
from pipeline.training.distributed import gather_features, summing_ddp
from pipeline.training.freezing import lock, trunk_blocks
from pipeline.training.loop import Trainer


def lock_trunk(encoder: ImageEncoder, trainable: str) -> list[torch.nn.Module]:
    """Lock the encoder's trunk as `model.trainable` says; the modules to keep in eval mode."""
    layers = trainable_layers(trainable, "model.trainable")
    blocks, inputs = trunk_blocks(encoder.trunk) if layers else ([], [])
    return lock(encoder.trunk, blocks, inputs, layers, "model.trainable")


class BackboneTrainer(Trainer):
    """Trains `config`'s image encoder on the `train` split against its caption embeddings; validates on `val`."""

    run_class = BackboneRun

    def build(self):
        config, t = self.config, self.config.training
        self.train_images = SplitImages(self.train.image_paths, train_transform(config.model, config.augment), t.seed)
        self.sampler = EpochSampler(
            self.train.caption_image_index, len(self.train.image_paths), t.epoch_sampling, t.seed, "cpu"
        )
        if self.world > 1 and len(self.sampler) < t.batch_size:
            raise BadInput(
                f"training.batch_size {t.batch_size}: more than the {len(self.sampler)} pairs of an epoch; under "
                "torchrun every step takes a whole global batch"
            )
        model = self.build_model().to(self.device)
        self.forward = summing_ddp(model, self.device) if self.world > 1 else model  # what a training step runs
        return model, losses.build_from(config.loss, config.model.learnable_temp)

    def build_model(self) -> torch.nn.Module:
        """The image encoder, projecting into the cache's caption space (its trunk locked per model.trainable)."""
        m, text_dim = self.config.model, self.train.dims[1]
        if m.output_dim is not None and m.output_dim != text_dim:
            raise BadInput(
                f"config key 'model.output_dim': {m.output_dim}, but the frozen caption embeddings of "
                f"{self.config.data.cache} are {text_dim}-d; leave it out (or train a text tower: model.text)"
            )
        encoder = self.image_encoder_of(text_dim)
        self.locked = lock_trunk(encoder, m.trainable)
        return encoder

    def image_encoder_of(self, output_dim: int) -> ImageEncoder:
        """The config's image encoder (its pretrained weights, if any)."""
        self.architecture = self.config.architecture(output_dim=output_dim)
        return ImageEncoder(**self.architecture)

    def train_mode(self) -> None:
        """Training mode, with the locked modules kept in eval mode."""
        super().train_mode()
        for module in self.locked:
            module.eval()

    def micro_batches_per_epoch(self) -> int:
        return max(1, len(self.sampler) // self.config.training.batch_size)

    def loader(self, dataset: SplitImages, order, batch_size: int, drop_last: bool):
        return image_loader(
            dataset, order, batch_size, self.config.data.num_workers, drop_last, self.device.type == "cuda"
        )

    def epoch_batches(self, epoch: int) -> Iterator:
        """The epoch's micro-batches (`pair_batches` of the sampler's order)."""
        batch = self.config.training.batch_size
        rows, captions = self.rank_share(*self.sampler.order(epoch), batch)
        self.train_images.epoch = epoch
        share = batch // self.world
        return self.pair_batches(rows, captions, share, len(rows) >= share)

    def rank_share(self, rows: torch.Tensor, captions: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's 1/W share of every global batch of `batch` pairs (everything in one process)."""
        if self.world == 1:
            return rows, captions
        share = batch // self.world
        mine = torch.arange(len(rows) - len(rows) % batch).view(-1, self.world, share)[:, self.rank].reshape(-1)
        return rows[mine], captions[mine]

    def pair_batches(self, rows, captions, batch: int, drop_last: bool) -> Iterator:
        """Micro-batches of ((B, 3, H, W) pixels, (B, D_txt) caption embeddings, (B,) image rows) of the
        (image row, caption row) pairs `zip(rows, captions)`, images decoded in the loader workers."""
        for index, (image_rows, pixels) in enumerate(self.loader(self.train_images, rows, batch, drop_last)):
            yield pixels, self.train.text[captions[index * batch : index * batch + len(image_rows)]], image_rows

    def batch_loss(self, batch) -> torch.Tensor:
        """Loss of (B, 3, H, W) pixels against (B, D_txt) frozen caption embeddings."""
        pixels, captions, rows = batch
        with autocast(self.device, self.precision):
            image_features = self.forward(pixels.to(self.device, non_blocking=True))
        text_features = F.normalize(captions.to(self.device).float(), dim=-1)
        image_features = F.normalize(image_features.float(), dim=-1)
        return self.loss(*(gather_features(x) for x in (image_features, text_features, rows.to(self.device))))

    def make_run(self) -> BackboneRun:
        cache_dir = self.train.cache_dir
        return self.run_class(self.config, self.model, self.device, cache_dir, self.precision)

    def encode_queries(self, text: torch.Tensor) -> torch.Tensor:
        """The caption side is frozen: (M, D) cached embeddings, L2-normalised."""
        return self.run_model.frozen_captions(text)

    def checkpoint(self) -> dict:
        """What `xalign encode --image-model` needs: format tag, architecture, encoder weights (weights_only-safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "architecture": self.architecture,
            "encoder": self.model.state_dict(),
            "config": self.config.to_dict(),
            "epoch": self.epoch,
        }

    def load_weights(self, state: dict, path: Path) -> None:
        load_weights(self.model, state.get("encoder"), path)
