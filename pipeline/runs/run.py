"""The run object: one trained run, of any kind, that embeds a split or raw queries into its shared space.

`open_run(RUN_DIR)` rebuilds it from the checkpoint and the cache metadata alone (no optimizer, scheduler or
loader); a trainer builds the same object around its live modules, so the embeddings validated during
training, evaluated later, re-ranked, plotted and searched come from one path (DESIGN "Run model").

Kinds: `head` (pooled heads on cached vectors), `token_head` (heads on cached tokens), `cross_encoder` (a token
head that also scores pairs), `backbone` (a trained image encoder against the cache's frozen captions),
`two_tower` (trained image and text towers), `fused` (two towers with fusion layers that score pairs).
Embeddings are fp32 and L2-normalised; rows follow the cache's order.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from encoding import cache
from encoding.errors import BadInput
from pipeline.data.split_tensors import SplitTensors
from pipeline.runs.frozen import FrozenBackbones

PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (P,) image rows, (P,) caption rows → (P,)


class Run:
    """What every run kind offers. A kind sets `kind`, `scores_pairs` and implements the embedding methods.

    `config` is the run's validated config, `device` where it computes; `cache_dir` is the cache whose recorded
    backbones encode raw queries (read only when a raw query is asked for)."""

    kind = ""
    scores_pairs = False  # a cross encoder or fused run: `pair_scorer` and `score` re-rank a dual top K
    checkpoint: Path | None = None  # the file `open_run` read
    dims: tuple[int, int] | None = None  # a head run's input dims (pooled or token), from its checkpoint

    def __init__(self, config, device, cache_dir: Path | None):
        self.config, self.device = config, torch.device(device)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._frozen: FrozenBackbones | None = None

    @property
    def batch_size(self) -> int:
        return self.config.training.eval_batch_size

    @property
    def rerank_k(self) -> int | None:
        """The top K a pair scorer re-ranks by default (None for dual runs)."""
        return None

    @property
    def frozen(self) -> FrozenBackbones:
        """The cache's recorded backbones (loaded on first use)."""
        if self._frozen is None:
            if self.cache_dir is None or not (self.cache_dir / cache.METADATA).is_file():
                raise BadInput(f"raw queries need the run's cache (its recorded backbones); {self.cache_dir} has none")
            self._frozen = FrozenBackbones(cache.read_metadata(self.cache_dir), self.device)
        return self._frozen

    def embed_split(self, split: SplitTensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, D) image and (M, D) caption embeddings of a split and its (M,) caption→image rows."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(M,) raw texts → (M, D), as the split's captions are embedded."""
        raise NotImplementedError

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """(N,) PIL images → (N, D), as the split's images are embedded."""
        raise NotImplementedError

    def pair_scorer(self, split: SplitTensors) -> PairScorer:
        """Match logits of (image row, caption row) pairs of `split` (after `embed_split(split)`)."""
        raise BadInput(f"a '{self.kind}' run embeds; it does not score pairs")

    def score(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """(P,) match logits of raw (image, text) pairs `zip(images, texts)`."""
        raise BadInput(f"a '{self.kind}' run embeds; it does not score pairs")

    def score_query(self, split: SplitTensors, rows: torch.Tensor, text: str | None = None, image=None) -> torch.Tensor:
        """(K,) match logits of one raw query against `rows` (K,) of `split`: a `text` against its images, or an
        `image` (PIL) against its captions (search re-ranks a dual top K with them)."""
        raise BadInput(f"a '{self.kind}' run embeds; it does not score pairs")
