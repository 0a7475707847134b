"""Token-head training: heads over the cached image and caption tokens of `xalign encode --tokens`.

`TokenTrainer` trains a dual token head (`attention_pool`, `token_transformer`, `sparse_attention`)
with its contrastive loss; `CrossEncoderTrainer` trains `cross_encoder` with `itm` (its dual part's
ITC plus a match loss on in-batch hard negatives, ALBEF) and evaluates by re-ranking its own dual
top `model.rerank_k`. Batches come from `pipeline.data.token_stream` (the same batches whether the tokens
are held in memory or streamed from the shards, `data.stream`); micro-batching, accumulation, the
schedule, checkpoints and exact resume are the loop's.
"""

import torch

from encoding.errors import BadInput
from encoding.runtime import autocast
from pipeline.data.split_tensors import SplitTensors
from pipeline.data.token_source import TokenBatch, token_shape, token_source
from pipeline.data.token_stream import ChunkedSampler, epoch_batches, prefetched
from pipeline.evaluation.rerank import reranked, reranked_metrics
from pipeline.heads.token_pair import TokenHeadPair
from pipeline.losses.itm import itm_pairs
from pipeline.training.distributed import gather_features
from pipeline.training.loop import TIMED_QUERIES
from pipeline.training.pooled_heads import HeadTrainer, build_model_and_loss


@torch.no_grad()
def embed_tokens(model: TokenHeadPair, source, split: SplitTensors, batch_size: int, device) -> tuple:
    """(N, D) image and (M, D) caption embeddings of a split's tokens, fp32, eval mode, `batch_size` at a time."""
    model.eval()

    def chunks(count: int, read):
        return (
            prefetched(read(rows) for rows in torch.arange(count).split(batch_size))
            if source.streamed
            else (read(rows) for rows in torch.arange(count).split(batch_size))
        )

    image = [model.encode_image(tokens.to(device).float()) for tokens in chunks(len(split.image_ids), source.images)]
    text = [
        model.encode_text(tokens.to(device).float(), mask.to(device))
        for tokens, mask in chunks(len(split.caption_image_index), source.captions)
    ]
    return torch.cat(image), torch.cat(text)


def match_scorer(model, source, device):
    """`score_pairs(image_rows, caption_rows) -> (P,)` match logits of the cross encoder on a split's tokens."""

    @torch.no_grad()
    def score(image_rows: torch.Tensor, caption_rows: torch.Tensor) -> torch.Tensor:
        text, mask = source.captions(caption_rows.cpu())
        image = source.images(image_rows.cpu())
        return model.match(image.to(device).float(), text.to(device).float(), mask.to(device)).float()

    return score


class TokenTrainer(HeadTrainer):
    """Trains a dual token head on the train split's tokens, validating on the val split's each epoch."""

    def build(self):
        t, loss_options = self.config.training, self.config.loss
        if t.batch_size % self.world:
            raise BadInput(f"training.batch_size {t.batch_size} must divide by the {self.world} torchrun processes")
        if loss_options.mixup_alpha > 0:
            raise BadInput(
                "config key 'loss.mixup_alpha': latent mixup mixes pooled vectors; token heads do not take it"
            )
        if loss_options.type == "blip":
            raise BadInput("config key 'loss.type': 'blip' needs momentum heads; token heads train with the others")
        self.sources: dict[int, tuple] = {}
        shape = token_shape(self.train.cache_dir)
        self.token_dims = [shape.image_dim, shape.text_dim]
        self.train_tokens = self.tokens_of(self.train)
        model, loss = build_model_and_loss(self.config, *self.token_dims)
        model.to(self.device)
        self.forward = self.wrap(model)
        self.loss_takes_momentum = False
        self.sampler = ChunkedSampler(
            self.train.caption_image_index, len(self.train.image), t.epoch_sampling, t.seed, torch.device("cpu")
        )
        self.batch_size = min(t.batch_size, len(self.sampler))
        return model, loss

    def tokens_of(self, split: SplitTensors):
        """The token source of `split`, opened once (in memory or streamed, as `data.stream` says)."""
        key = id(split.cache_rows[0])  # `SplitTensors.to` keeps the row arrays: a moved split is the same split
        if key not in self.sources:
            self.sources[key] = (split.cache_rows, token_source(split, self.config.data.stream))
        return self.sources[key][1]

    def share(self) -> slice:
        part = self.batch_size // self.world
        return slice(self.rank * part, (self.rank + 1) * part)

    def epoch_batches(self, epoch: int):
        rows, captions = self.epoch_order(epoch)
        return epoch_batches(self.train_tokens, rows, captions, self.batch_size, self.share())

    def features(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.precision):
            image, text = self.forward(batch.image.float(), None, batch.text.float(), batch.text_mask)
        return image.float(), text.float()

    def batch_loss(self, batch: TokenBatch) -> torch.Tensor:
        batch = batch.to(self.device)
        image, text = self.features(batch)
        return self.loss(gather_features(image), gather_features(text), gather_features(batch.image_rows))

    def embed(self, split: SplitTensors) -> tuple[torch.Tensor, torch.Tensor]:
        return embed_tokens(self.model, self.tokens_of(split), split, self.config.training.eval_batch_size, self.device)

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

    def test_metrics(self, split: SplitTensors, image: torch.Tensor, text: torch.Tensor) -> dict:
        """Metrics of the dual features' top `model.rerank_k` re-ranked by the match head."""
        index = split.caption_image_index.to(image.device)
        scorer = match_scorer(self.model.eval(), self.tokens_of(split), self.device)
        return reranked_metrics(image, text, index, self.config.model.rerank_k, scorer)

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
