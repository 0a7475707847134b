"""Head training: projection heads + loss stepping over cached embeddings, held in memory (on the GPU
when present and they fit) or streamed from the shards (`data.stream`, `pipeline.data.pooled_source`).

Each epoch draws batches from a chunked shuffle (`epoch_stream.ChunkedSampler`: every image once with
one random caption, or every caption once; runs of `POOLED_CHUNK` cache rows shuffled within windows of
at least 65,536 items), the same order in memory and streamed, so both give the same weights; there is
no per-sample Dataset or DataLoader in the hot loop.
A micro-batch: gather the rows, optional latent mixup (FuseMix), heads under autocast (bf16/fp16 on
CUDA, fp32 on CPU), loss in fp32 on the features gathered from every rank. Evaluation embeddings
are fp32. Under torchrun each rank takes its 1/W share of every global batch (`training.batch_size`
is the global batch) and the heads' gradients are summed over ranks, so a step equals the
single-process step on the global batch.
"""

import inspect
from collections.abc import Iterator
from pathlib import Path

import torch

from encoding.errors import BadInput
from encoding.runtime import autocast
from pipeline import heads, losses
from pipeline.config.experiment import ExperimentConfig
from pipeline.data.epoch_stream import POOLED_CHUNK, ChunkedSampler, epoch_batches, pooled_window
from pipeline.data.pooled_source import training_inputs
from pipeline.data.split_tensors import fits_on
from pipeline.losses.mixing import fusemix
from pipeline.runs.head_runs import HeadRun
from pipeline.training.checkpoint import load_weights
from pipeline.training.distributed import gather_features, summing_ddp
from pipeline.training.loop import Trainer


def build_model_and_loss(config: ExperimentConfig, image_dim: int, text_dim: int):
    """The head pair and the loss module a config asks for (dims come from the cache)."""
    model = heads.build_from(config.model, image_dim, text_dim)
    return model, losses.build_from(config.loss, config.model.learnable_temp)


class HeadTrainer(Trainer):
    """Trains `config`'s heads on `train`, validating on `val` each epoch."""

    reads_train_lazily = True  # the train split may come without its embeddings: `build` reads or streams them

    def build(self):
        t = self.config.training
        self.train, self.source = training_inputs(self.train, self.config.data.stream)
        self.streams_train = self.source is not None
        if self.source is None and fits_on(self.train, self.device):
            self.train = self.train.to(self.device)
        self.val = self.val.to(self.device) if fits_on(self.val, self.device) else self.val
        model, loss = build_model_and_loss(self.config, *self.train.dims)
        model.to(self.device)
        self.forward = self.wrap(model)
        self.loss_takes_momentum = "momentum_features" in inspect.signature(loss.forward).parameters
        index_device = self.device if self.source is None else torch.device("cpu")
        self.sampler = ChunkedSampler(
            self.train.caption_image_index,
            self.train.num_images,
            t.epoch_sampling,
            t.seed,
            index_device,
            chunk=POOLED_CHUNK,
            window=pooled_window(t.batch_size),
        )
        self.batch_size = self.checked_batch_size(streamed=self.source is not None)
        return model, loss

    def checked_batch_size(self, streamed: bool) -> int:
        """`training.batch_size`, or the pairs of an epoch when fewer (in memory); a streamed split must hold a
        whole global batch (BadInput naming the key)."""
        pairs, wanted = len(self.sampler), self.config.training.batch_size
        if wanted > pairs and streamed:
            raise BadInput(
                f"config key 'training.batch_size': {wanted} is more than the {pairs} pairs of an epoch of split "
                f"'{self.train.name}' (streamed from the shards, data.stream); use a batch of at most {pairs}"
            )
        return min(wanted, pairs)

    def share(self) -> slice:
        """This rank's rows of each global batch."""
        part = self.batch_size // self.world
        return slice(self.rank * part, (self.rank + 1) * part)

    def wrap(self, model: torch.nn.Module):
        """The callable a step runs: DDP (summing gradients) under torchrun, compiled on request."""
        if self.world > 1:
            model = summing_ddp(model, self.device)
        return torch.compile(model) if self.config.training.compile else model

    def micro_batches_per_epoch(self) -> int:
        return max(1, len(self.sampler) // self.batch_size)

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(S,) image rows and (S,) caption rows of one epoch (the same on every rank)."""
        return self.sampler.order(epoch)

    def epoch_batches(self, epoch: int) -> Iterator:
        rows, captions = self.epoch_order(epoch)
        mixup = self.sampler.generator(epoch, stream=1)
        if self.source is not None:
            yield from self.streamed_batches(rows, captions, mixup)
            return
        for step in range(self.micro_batches):
            batch = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield (*self.batch_inputs(rows[batch], captions[batch]), mixup)

    def streamed_batches(self, rows: torch.Tensor, captions: torch.Tensor, mixup: torch.Generator) -> Iterator:
        """This rank's micro-batches read from the shards a shuffle window ahead (`epoch_stream.epoch_batches`)."""
        batches = epoch_batches(self.source, rows, captions, self.batch_size, self.share(), self.sampler.window_items)
        try:
            for batch in batches:
                move = {"device": self.device, "non_blocking": True}
                yield batch.image.to(**move), batch.text.to(**move), batch.image_rows.to(**move), mixup
        finally:
            batches.close()

    def batch_inputs(self, image_rows: torch.Tensor, caption_rows: torch.Tensor):
        """This rank's share of a global batch: (b, D_img) images, (b, D_txt) captions, (b,) image rows."""
        image_rows, caption_rows = image_rows[self.share()], caption_rows[self.share()]
        source = self.train.image.device
        image = self.train.image[image_rows.to(source)].to(self.device, non_blocking=True)
        text = self.train.text[caption_rows.to(source)].to(self.device, non_blocking=True)
        return image, text, image_rows

    def batch_loss(self, batch) -> torch.Tensor:
        """Loss of this rank's (b, D_img) images and (b, D_txt) captions against the global batch."""
        image, text, image_ids, mixup = batch
        if self.config.loss.mixup_alpha > 0:
            image, text, image_ids = fusemix(
                image, text, image_ids, self.train.num_images, self.config.loss.mixup_alpha, mixup
            )
        with autocast(self.device, self.precision):
            image_features, text_features = self.forward(image, text)
        extra = {}
        if self.loss_takes_momentum:
            momentum = self.model.momentum_features(image, text)
            extra["momentum_features"] = None if momentum is None else tuple(gather_features(f) for f in momentum)
            extra["progress"] = self.progress()
        return self.loss(
            gather_features(image_features.float()),
            gather_features(text_features.float()),
            gather_features(image_ids),
            **extra,
        )

    def make_run(self) -> HeadRun:
        return HeadRun(self.config, self.model, self.device, self.train.cache_dir)

    @torch.no_grad()
    def encode_queries(self, text: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(text.to(self.device).float())

    def checkpoint(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "config": self.config.to_dict(),
            "dims": list(self.train.dims),
            "epoch": self.epoch,
        }

    def load_weights(self, state: dict, path: Path) -> None:
        load_weights(self.model, state.get("model"), path)
