"""Runs of `xalign train`: heads over a cache's pooled vectors (`head`), over its tokens (`token_head`), and
the cross encoder that also scores pairs (`cross_encoder`, ALBEF's ITM head over the same tokens).

Raw queries pass the cache's recorded backbones first (`pipeline.runs.frozen`), then the heads.
"""

import torch

from pipeline.data.epoch_stream import prefetched
from pipeline.data.split_tensors import SplitTensors
from pipeline.data.token_source import token_source
from pipeline.runs.run import PairScorer, Run


class HeadRun(Run):
    """A head pair (`pipeline.heads.HeadPair`) on the cache's pooled (N, D_img) and (M, D_txt) vectors."""

    kind = "head"

    def __init__(self, config, model: torch.nn.Module, device, cache_dir=None):
        super().__init__(config, device, cache_dir)
        self.model = model

    def embed_split(self, split: SplitTensors):
        image, text = self.model.embed(split.image, split.text, self.batch_size)
        return image, text, split.caption_image_index.to(image.device)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.embed(torch.zeros(0, 0), self.frozen.encode_texts(texts), self.batch_size)[1]

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        return self.model.embed(self.frozen.encode_images(images), torch.zeros(0, 0), self.batch_size)[0]


class TokenHeadRun(HeadRun):
    """A token head pair (`pipeline.heads.token_pair.TokenHeadPair`) on the cache's image and caption tokens.

    The tokens of a split are opened once per split (in memory or streamed, as `data.stream` says)."""

    kind = "token_head"

    def __init__(self, config, model: torch.nn.Module, device, cache_dir=None):
        super().__init__(config, model, device, cache_dir)
        self.sources: dict[int, tuple] = {}

    def tokens_of(self, split: SplitTensors):
        """The token source of `split`, opened once (`SplitTensors.to` keeps the row arrays: same split)."""
        key = id(split.cache_rows[0])
        if key not in self.sources:
            self.sources[key] = (split.cache_rows, token_source(split, self.config.data.stream))
        return self.sources[key][1]

    @torch.no_grad()
    def embed_split(self, split: SplitTensors):
        model, source, device = self.model.eval(), self.tokens_of(split), self.device

        def chunks(count: int, read):
            reads = (read(rows) for rows in torch.arange(count).split(self.batch_size))
            return prefetched(reads) if source.streamed else reads

        image = [
            model.encode_image(tokens.to(device).float()) for tokens in chunks(len(split.image_ids), source.images)
        ]
        text = [
            model.encode_text(tokens.to(device).float(), mask.to(device))
            for tokens, mask in chunks(len(split.caption_image_index), source.captions)
        ]
        return torch.cat(image), torch.cat(text), split.caption_image_index.to(device)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        _, tokens, mask = self.frozen.encode_texts(texts, tokens=True)
        return self.model.embed(torch.zeros(0, 1, 1), tokens, self.batch_size, text_mask=mask)[1]

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        _, tokens = self.frozen.encode_images(images, tokens=True)
        return self.model.embed(tokens, torch.zeros(0, 1, 1), self.batch_size)[0]


class CrossEncoderRun(TokenHeadRun):
    """`cross_encoder`: its dual token heads embed; its match head scores pairs of the same tokens."""

    kind = "cross_encoder"
    scores_pairs = True

    @property
    def rerank_k(self) -> int:
        return self.config.model.rerank_k

    def pair_scorer(self, split: SplitTensors) -> PairScorer:
        source, model, device = self.tokens_of(split), self.model.eval(), self.device

        @torch.no_grad()
        def score(image_rows: torch.Tensor, caption_rows: torch.Tensor) -> torch.Tensor:
            text, mask = source.captions(caption_rows.cpu())
            image = source.images(image_rows.cpu())
            return model.match(image.to(device).float(), text.to(device).float(), mask.to(device)).float()

        return score

    @torch.no_grad()
    def score(self, images, texts: list[str]) -> torch.Tensor:
        _, image = self.frozen.encode_images(images, tokens=True)
        _, text, mask = self.frozen.encode_texts(texts, tokens=True)
        d = self.device
        return self.model.eval().match(image.to(d).float(), text.to(d).float(), mask.to(d)).float()

    @torch.no_grad()
    def score_query(self, split: SplitTensors, rows: torch.Tensor, text: str | None = None, image=None) -> torch.Tensor:
        source, rows, d = self.tokens_of(split), rows.cpu(), self.device
        if text is not None:
            _, query, mask = self.frozen.encode_texts([text], tokens=True)
            gallery = source.images(rows).to(d).float()
            query, mask = query.to(d).float().expand(len(rows), -1, -1), mask.to(d).expand(len(rows), -1)
            return self.model.eval().match(gallery, query, mask).float()
        _, query = self.frozen.encode_images([image], tokens=True)
        captions, mask = source.captions(rows)
        query = query.to(d).float().expand(len(rows), -1, -1)
        return self.model.eval().match(query, captions.to(d).float(), mask.to(d)).float()
