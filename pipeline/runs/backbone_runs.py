"""Runs of `xalign backbone-train`: a trained image encoder against the cache's frozen captions (`backbone`),
trained image and text towers (`two_tower`), and two towers with fusion layers that score pairs (`fused`,
ALBEF's image-grounded text encoder).

Images are decoded from the cache's paths (or given as PIL images) with the run's eval preprocessing; caption
texts go through the trained text tower's tokenizer, or, with no text tower, through the cache's recorded text
backbone. A checkpoint rebuilds its towers from the architectures it stores: no pretrained download.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from encoding.backbones.image_encoder import build_image_encoder, eval_transform
from encoding.backbones.text_encoder import build_text_encoder, text_tokenizer
from encoding.datasets import open_image
from encoding.runtime import autocast
from encoding.token_packing import pad_and_stack
from pipeline.data.images import Captions, SplitImages, image_loader, pair_loader
from pipeline.runs.run import PairScorer, Run
from pipeline.training.towers import FusedTwoTower, TwoTower


class BackboneRun(Run):
    """An image encoder (`encoding.backbones.image_encoder.ImageEncoder`); captions are the frozen cache side."""

    kind = "backbone"

    def __init__(self, config, model: torch.nn.Module, device, cache_dir=None, precision: str = "fp32"):
        super().__init__(config, device, cache_dir)
        self.model, self.precision = model, precision

    @classmethod
    def from_checkpoint(cls, state: dict, config, device, cache_dir, precision: str) -> "BackboneRun":
        """The run a backbone checkpoint `state` describes (weights loaded by the caller)."""
        return cls(config, build_image_encoder(**state["architecture"]), device, cache_dir, precision)

    @property
    def image_encoder(self) -> torch.nn.Module:
        return self.model

    def loader(self, dataset, order, batch_size: int):
        return image_loader(dataset, order, batch_size, self.config.data.num_workers, False, self.device.type == "cuda")

    def transform(self):
        m = self.config.model
        return eval_transform(m.image_size, m.mean, m.std)

    def eval_pixels(self, paths):
        """(B, 3, H, W) batches of the un-augmented images on the device, `eval_batch_size` at a time."""
        images = SplitImages(paths, self.transform())
        for _, pixels in self.loader(images, range(len(images)), self.batch_size):
            yield pixels.to(self.device)

    @torch.no_grad()
    def image_features(self, pixel_batches) -> torch.Tensor:
        self.model.eval()
        parts = [F.normalize(self.image_encoder(pixels).float(), dim=-1) for pixels in pixel_batches]
        return torch.cat(parts)

    def pil_batches(self, images):
        transform = self.transform()
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            yield default_collate([transform(image.convert("RGB")) for image in batch]).to(self.device)

    def embed_split(self, split):
        image = self.image_features(self.eval_pixels(split.image_paths))
        text = self.frozen_captions(split.text)
        return image, text, split.caption_image_index.to(image.device)

    def frozen_captions(self, text: torch.Tensor) -> torch.Tensor:
        """(M, D) cached caption embeddings, L2-normalised: the caption side of an image-only run."""
        return F.normalize(text.to(self.device).float(), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.frozen_captions(self.frozen.encode_texts(texts))

    def encode_images(self, images) -> torch.Tensor:
        return self.image_features(self.pil_batches(images))


class TwoTowerRun(BackboneRun):
    """An image and a text tower (`TwoTower`) trained together; `tokenize` is the text tower's tokenizer."""

    kind = "two_tower"

    def __init__(self, config, model: TwoTower, device, cache_dir=None, precision: str = "fp32", tokenize=None):
        super().__init__(config, model, device, cache_dir, precision)
        self.tokenize = tokenize

    @classmethod
    def from_checkpoint(cls, state: dict, config, device, cache_dir, precision: str) -> "TwoTowerRun":
        image = build_image_encoder(**state["architecture"])
        text = build_text_encoder(state["text_architecture"], pretrained=False)
        model = cls.assemble(image, text, config)
        return cls(config, model, device, cache_dir, precision, text_tokenizer(state["text_architecture"]))

    @staticmethod
    def assemble(image, text, config) -> torch.nn.Module:
        return TwoTower(image, text)

    @property
    def image_encoder(self) -> torch.nn.Module:
        return self.model.image

    def caption_batches(self, texts):
        """((B, L) ids, (B, L) mask) batches of caption texts, tokenised in the loader workers."""
        captions = Captions(texts)
        w, pin = self.config.data.num_workers, self.device.type == "cuda"
        return pair_loader(captions, range(len(captions)), self.batch_size, w, False, pin, self.tokenize)

    @torch.no_grad()
    def encode_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with autocast(self.device, self.precision):
            text = self.model.text(ids.to(self.device), mask.to(self.device))
        return F.normalize(text.float(), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        parts = [self.encode_tokens(ids, mask) for ids, mask in self.caption_batches(list(texts))]
        return torch.cat(parts) if parts else torch.zeros(0, 0, device=self.device)

    def embed_split(self, split):
        image = self.image_features(self.eval_pixels(split.image_paths))
        return image, self.encode_texts(split.captions), split.caption_image_index.to(image.device)


class FusedRun(TwoTowerRun):
    """Two towers plus fusion layers (`FusedTwoTower`): the towers embed, the match head scores pairs.

    `embed_split` keeps the split's image tokens and caption hidden states (fp16, on the host) for
    `pair_scorer`."""

    kind = "fused"
    scores_pairs = True

    def __init__(self, config, model, device, cache_dir=None, precision: str = "fp32", tokenize=None):
        super().__init__(config, model, device, cache_dir, precision, tokenize)
        self.split_tokens = None  # (image ids, image tokens, caption tokens, caption masks) of the last split

    @staticmethod
    def assemble(image, text, config) -> torch.nn.Module:
        return FusedTwoTower(image, text, config.model.fusion)

    @property
    def rerank_k(self) -> int:
        return self.config.model.fusion.rerank_k

    @torch.no_grad()
    def towers(self, pixel_batches, caption_batches):
        """Dual embeddings with their tokens: ((N, D), (N, T, C) fp16, (M, D), (M, L, W) fp16, (M, L) mask)."""
        self.model.eval()
        images, image_tokens = [], []
        for pixels in pixel_batches:
            embedding, tokens, _ = self.model.image.forward_with_tokens(pixels)
            images.append(F.normalize(embedding.float(), dim=-1))
            image_tokens.append(tokens.half().cpu())
        texts, text_parts = [], []
        for ids, mask in caption_batches:
            embedding, tokens = self.model.text.forward_with_tokens(ids.to(self.device), mask.to(self.device))
            texts.append(F.normalize(embedding.float(), dim=-1))
            text_parts.append((tokens.half().cpu(), mask))
        text_tokens, masks = pad_and_stack(text_parts, self.model.text.tower.token_dim)
        return torch.cat(images), torch.cat(image_tokens), torch.cat(texts), text_tokens, masks

    def embed_split(self, split):
        image, image_tokens, text, text_tokens, masks = self.towers(
            self.eval_pixels(split.image_paths), self.caption_batches(split.captions)
        )
        self.split_tokens = (split.image_ids, image_tokens, text_tokens, masks)
        return image, text, split.caption_image_index.to(image.device)

    def match(self, image_tokens, text_tokens, masks) -> torch.Tensor:
        """(P,) match logits of P pairs of host-side tokens."""
        d = self.device
        return self.model.matcher(image_tokens.to(d).float(), text_tokens.to(d).float(), masks.to(d)).float()

    def pair_scorer(self, split) -> PairScorer:
        seen, image_tokens, text_tokens, masks = self.split_tokens or (None,) * 4
        if seen is None or not np.array_equal(seen, split.image_ids):
            raise RuntimeError("embed_split(split) comes before scoring the split's pairs")

        @torch.no_grad()
        def score(image_rows: torch.Tensor, caption_rows: torch.Tensor) -> torch.Tensor:
            self.model.eval()
            image_rows, caption_rows = image_rows.cpu(), caption_rows.cpu()
            return self.match(image_tokens[image_rows], text_tokens[caption_rows], masks[caption_rows])

        return score

    @torch.no_grad()
    def score(self, images, texts: list[str]) -> torch.Tensor:
        _, image_tokens, _, text_tokens, masks = self.towers(
            self.pil_batches(images), self.caption_batches(list(texts))
        )
        return self.match(image_tokens, text_tokens, masks)

    def score_query(self, split, rows: torch.Tensor, text: str | None = None, image=None) -> torch.Tensor:
        rows = rows.tolist()
        if text is not None:
            return self.score([open_image(split.image_paths[r]) for r in rows], [text] * len(rows))
        return self.score([image] * len(rows), [split.captions[r] for r in rows])
