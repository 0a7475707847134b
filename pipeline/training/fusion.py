"""The cross-attention variant of two-tower mode (`model.fusion`): text layers that attend to the image map.

Image features integrated directly into the text encoder, as ALBEF (Li et al., 2021) builds it: the text
tower's final hidden states pass `model.fusion.num_layers` layers of self-attention → cross-attention to the
image trunk's spatial tokens → MLP (`pipeline.heads.cross_encoder.MatchHead`), and give one match logit per
image-caption pair. The towers' pooled projections stay a dual encoder. Training uses loss `itm`: ITC on the
dual embeddings plus a binary match loss on the positive pairs and one hard negative per image and per
caption, drawn from the batch's ITC similarity with a generator seeded per epoch (so a resumed run draws the
same negatives). Validation and test re-rank each query's top `model.fusion.rerank_k` by the dual embeddings
with the match logits (ranks beyond K unchanged)."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoding.backbones.image_encoder import ImageEncoder
from encoding.errors import BadInput
from encoding.runtime import autocast
from pipeline.data.split_tensors import SplitTensors
from pipeline.evaluation.rerank import reranked
from pipeline.losses.itm import itm_pairs
from pipeline.runs.backbone_runs import FusedRun
from pipeline.training.checkpoint import load_weights
from pipeline.training.loop import TIMED_QUERIES
from pipeline.training.two_tower import TwoTowerTrainer


class FusedTwoTowerTrainer(TwoTowerTrainer):
    """Two towers and their fusion layers, trained with `itm`; evaluated by re-ranking the dual top K."""

    run_class = FusedRun

    def assemble(self, image: ImageEncoder, text: nn.Module) -> nn.Module:
        if self.world > 1:
            raise BadInput("config key 'model.fusion': trains in one process (hard negatives per batch); no torchrun")
        self.mining = self.mining_generator(0)
        return super().assemble(image, text)

    def mining_generator(self, epoch: int) -> torch.Generator:
        """The hard-negative draws of `epoch`: seeded by (seed, epoch), so a resumed epoch draws the same."""
        return torch.Generator().manual_seed(self.config.training.seed * 1_000_003 + epoch + 1)

    def epoch_batches(self, epoch: int):
        self.mining = self.mining_generator(epoch)
        return super().epoch_batches(epoch)

    def batch_loss(self, batch) -> torch.Tensor:
        rows, pixels, ids, mask = (x.to(self.device, non_blocking=True) for x in batch)
        with autocast(self.device, self.precision):
            image, text, image_tokens, text_tokens = self.model(pixels, ids, mask)
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        similarity = (image @ text.T).detach()
        images, captions, labels = itm_pairs(similarity, rows, self.mining, self.loss.scale().item())
        with autocast(self.device, self.precision):
            logits = self.model.matcher(image_tokens[images], text_tokens[captions], mask[captions])
        return self.loss(image, text, rows, match_logits=logits.float(), match_labels=labels)

    def query_search(self, test: SplitTensors, gallery: torch.Tensor, k: int = 10):
        """Tokenise and embed 1,000 test captions and re-rank their top `rerank_k` images with the match logits."""
        texts = [test.captions[i % len(test.captions)] for i in range(TIMED_QUERIES)]
        _, image_tokens, _, _ = self.run_model.split_tokens

        @torch.no_grad()
        def search():
            self.model.eval()
            ids, mask = (x.to(self.device) for x in self.tokenize(texts))
            embedding, tokens = self.model.text.forward_with_tokens(ids, mask)

            def score(queries: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
                image = image_tokens[images.cpu()].to(self.device).float()
                return self.model.matcher(image, tokens[queries].float(), mask[queries])

            scores = F.normalize(embedding.float(), dim=-1) @ gallery.T
            return reranked(
                scores, self.config.model.fusion.rerank_k, score, torch.arange(len(texts), device=self.device)
            )

        return search

    def checkpoint(self) -> dict:
        """Both towers (what `xalign encode` rebuilds: the dual part) plus the fusion layers."""
        return {**super().checkpoint(), "fusion": self.model.matcher.state_dict()}

    def load_weights(self, state: dict, path: Path) -> None:
        super().load_weights(state, path)
        load_weights(self.model.matcher, state.get("fusion"), path)
