"""Token-head training: heads over the cached image and caption tokens of `xalign encode --tokens`.

`TokenTrainer` trains a dual token head (`attention_pool`, `token_transformer`, `sparse_attention`)
with its contrastive loss; `CrossEncoderTrainer` trains `cross_encoder` with `itm` (its dual part's
ITC plus a match loss on in-batch hard negatives, ALBEF) and evaluates by re-ranking its own dual
top `model.rerank_k`. Batches come from `pipeline.data.epoch_stream` (the same batches whether the tokens
are held in memory or streamed from the shards, `data.stream`); micro-batching, accumulation, the
schedule, checkpoints and exact resume are the loop's.
"""

import torch

from encoding.errors import BadInput
from encoding.runtime import autocast
from pipeline.data.epoch_stream import ChunkedSampler, epoch_batches
from pipeline.data.split_tensors import SplitTensors
from pipeline.data.token_source import TokenBatch, token_shape
from pipeline.evaluation.rerank import reranked
from pipeline.losses.itm import itm_pairs
from pipeline.runs.head_runs import CrossEncoderRun, TokenHeadRun
from pipeline.training.distributed import gather_features
from pipeline.training.loop import TIMED_QUERIES
from pipeline.training.pooled_heads import HeadTrainer, build_model_and_loss


class TokenTrainer(HeadTrainer):
    """Trains a dual token head on the train split's tokens, validating on the val split's each epoch."""

    run_class = TokenHeadRun

    def build(self):
        t, loss_options = self.config.training, self.config.loss
        if loss_options.mixup_alpha > 0:
            raise BadInput(
                "config key 'loss.mixup_alpha': latent mixup mixes pooled vectors; token heads do not take it"
            )
        if loss_options.type == "blip":
            raise BadInput("config key 'loss.type': 'blip' needs momentum heads; token heads train with the others")
        shape = token_shape(self.train.cache or self.train.cache_dir)
        self.token_dims = [shape.image_dim, shape.text_dim]
        model, loss = build_model_and_loss(self.config, *self.token_dims)
        model.to(self.device)
        self._run_model = self.run_class(self.config, model, self.device, self.train.cache_dir)
        self.train_tokens = self.tokens_of(self.train)
        self.streams_train = self.train_tokens.streamed
        self.forward = self.wrap(model)
        self.loss_takes_momentum = False
        self.sampler = ChunkedSampler(
            self.train.caption_image_index, self.train.num_images, t.epoch_sampling, t.seed, torch.device("cpu")
        )
        self.batch_size = self.checked_batch_size(streamed=self.train_tokens.streamed)
        return model, loss

    def tokens_of(self, split: SplitTensors):
        """The token source of `split`, opened once by the run object (in memory or streamed, `data.stream`)."""
        return self.run_model.tokens_of(split)

    def epoch_batches(self, epoch: int):
        rows, captions = self.epoch_order(epoch)
        span = self.sampler.window_items
        return epoch_batches(self.train_tokens, rows, captions, self.batch_size, self.share(), span)

    def features(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.precision):
            image, text = self.forward(batch.image.float(), None, batch.text.float(), batch.text_mask)
        return image.float(), text.float()

    def batch_loss(self, batch: TokenBatch) -> torch.Tensor:
        batch = batch.to(self.device)
        image, text = self.features(batch)
        return self.loss(gather_features(image), gather_features(text), gather_features(batch.image_rows))

    def query_search(self, test: SplitTensors, gallery: torch.Tensor, k: int = 10):
        """A closure embedding 1,000 test captions' tokens (read beforehand) and taking their top K images."""
        text, mask = self.tokens_of(test).captions(torch.arange(TIMED_QUERIES) % len(test.caption_image_index))
        text, mask = text.to(self.device).float(), mask.to(self.device)
        k = min(k, len(gallery))
        return lambda: (self.model.encode_text(text, mask) @ gallery.T).topk(k, dim=1)

    def checkpoint(self) -> dict:
        return {**super().checkpoint(), "dims": list(self.token_dims)}


class CrossEncoderTrainer(TokenTrainer):
    """Trains `cross_encoder` with `itm`: ITC on its dual features + a match loss on the positive pairs and one
    hard negative caption per image and image per caption, drawn from the batch's ITC similarity."""

    run_class = CrossEncoderRun

    def build(self):
        if self.world > 1:
            raise BadInput("model.type 'cross_encoder' trains in one process; run it without torchrun")
        if self.config.training.compile:
            raise BadInput(
                "config key 'training.compile': cross_encoder calls its match head outside forward; unset it"
            )
        return super().build()

    def wrap(self, model: torch.nn.Module):
        return model  # `match` is called outside forward: compiled or distributed wrappers would bypass it

    def epoch_batches(self, epoch: int):
        mining = self.sampler.generator(epoch, stream=2)
        return ((batch, mining) for batch in super().epoch_batches(epoch))

    def batch_loss(self, item) -> torch.Tensor:
        batch, mining = item
        batch = batch.to(self.device)
        image, text = self.features(batch)
        similarity = (image @ text.T).detach()
        images, captions, labels = itm_pairs(similarity, batch.image_rows, mining, self.loss.scale().item())
        with autocast(self.device, self.precision):
            logits = self.model.match(
                batch.image[images].float(), batch.text[captions].float(), batch.text_mask[captions]
            )
        return self.loss(image, text, batch.image_rows, match_logits=logits.float(), match_labels=labels)

    def query_search(self, test: SplitTensors, gallery: torch.Tensor, k: int = 10):
        """Embed 1,000 test captions and re-rank their top `rerank_k` images with the match head."""
        source = self.tokens_of(test)
        rows = torch.arange(TIMED_QUERIES) % len(test.caption_image_index)
        text, mask = (t.to(self.device) for t in source.captions(rows))
        images = source.images(torch.arange(len(gallery)))  # float16 on the host; candidates move per batch

        def score(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
            image = images[candidates.cpu()].to(self.device).float()
            return self.model.match(image, text[queries].float(), mask[queries])

        def search():
            scores = self.model.encode_text(text.float(), mask) @ gallery.T
            return reranked(scores, self.config.model.rerank_k, score, torch.arange(len(rows), device=self.device))

        return search
