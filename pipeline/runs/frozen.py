"""The frozen backbones a cache records, rebuilt to encode raw queries as the cache's items were encoded.

Texts go through the recorded text backbone with the recorded prefix, images through the recorded image
backbone and its own preprocessing; pooled outputs are L2-normalised and rounded to the stored dtype (as
`xalign encode` stores them).
For token caches the same forward also gives the tokens, packed (captions) or pooled to the recorded count
(images) exactly as `encoding.token_packing` stored them. A backbone is loaded on first use only: a run whose
backbone cannot be rebuilt here (a hub name without a network) still embeds its cache, and a raw query is a
clear error naming the spec.
"""

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate

from encoding.backbones import load_image_backbone, load_text_backbone
from encoding.encode import encode_texts_with_tokens
from encoding.errors import BadInput
from encoding.image_batches import to_device
from encoding.runtime import autocast
from encoding.token_packing import ImageTokens, image_tokens_for

BATCH = 64  # raw inputs per backbone forward
log = logging.getLogger(f"xalign.{__name__}")


def loaded(load, entry: dict, side: str, device: torch.device):
    """The backbone `load(spec, device)` of a metadata entry, or BadInput naming the spec."""
    spec = entry.get("spec")
    try:
        backbone = load(spec, device)
    except Exception as err:  # a missing hub model surfaces as OSError, ValueError, HTTP errors...
        if entry.get("library") == "import":
            raise BadInput(
                f"the cache's {side} vectors were imported (`xalign import --{side}-model '{spec}'`) and '{spec}' "
                f"does not load here as a backbone ({type(err).__name__}: {err}); raw {side} queries need the "
                "encoder that made them, named by a spec `xalign encode` takes"
            ) from err
        raise BadInput(
            f"the cache's {side} backbone '{spec}' cannot be loaded here ({type(err).__name__}: {err}); raw "
            f"{side} queries need it: put its weights at a local path and encode with that path as the spec"
        ) from err
    if entry.get("library") == "import":
        log.warning(
            f"the cache's {side} vectors were imported; raw {side} queries go through '{spec}' as loaded here "
            "(no prefix), which matches them only if that encoder made them the same way"
        )
    return backbone


def as_stored(embeddings: torch.Tensor, entry: dict) -> torch.Tensor:
    """fp32 embeddings rounded to the dtype the cache stores them in (`entry["dtype"]`), so that a raw query
    and the cache's copy of the same item are the same vector."""
    dtype = getattr(torch, str(entry.get("dtype")), None)
    return embeddings.to(dtype).float() if isinstance(dtype, torch.dtype) else embeddings


@dataclass
class FrozenBackbones:
    """Lazily loaded frozen backbones of a cache's `metadata.json` (`meta`), on `device`."""

    meta: dict
    device: torch.device
    _text: object = field(default=None, init=False)
    _image: object = field(default=None, init=False)

    @property
    def text(self):
        if self._text is None:
            self._text = loaded(load_text_backbone, self.meta["text_model"], "text", self.device)
        return self._text

    @property
    def image(self):
        if self._image is None:
            entry = self.meta["image_model"]
            size = {"image_size": entry["image_size"]} if entry.get("image_size") else {}  # `encode --image-size`
            self._image = loaded(
                lambda spec, device: load_image_backbone(spec, device, **size), entry, "image", self.device
            )
        return self._image

    def encode_texts(self, texts: list[str], tokens: bool = False):
        """(M,) texts → (M, D_txt) L2-normalised; with `tokens` also ((M, L, D') float16, (M, L) bool)."""
        entry = self.meta["text_model"]
        token_dim = entry.get("token_dim") if tokens else None
        embeddings, hidden, mask = encode_texts_with_tokens(
            list(texts), self.text, entry.get("prefix", ""), BATCH, self.device, "fp32", token_dim
        )
        embeddings = as_stored(embeddings, entry)
        return (embeddings, hidden, mask) if tokens else embeddings

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image], tokens: bool = False):
        """(N,) PIL images → (N, D_img) L2-normalised; with `tokens` also (N, T, D) float16 as the cache stores."""
        model, layout = self.image, self.image_tokens() if tokens else None
        parts, token_parts = [], []
        for start in range(0, len(images), BATCH):
            pixels = default_collate(
                [model.preprocess(image.convert("RGB")) for image in images[start : start + BATCH]]
            )
            pixels = to_device(pixels, self.device)
            with autocast(self.device, "fp32"):
                if layout is None:
                    features = model.encode(pixels)
                else:
                    features, grid_tokens, grid = model.encode_with_tokens(pixels)
                    token_parts.append(layout.store(grid_tokens, grid))
            parts.append(F.normalize(features.float(), dim=-1).cpu())
        embeddings = as_stored(
            torch.cat(parts) if parts else torch.zeros(0, self.meta["image_model"]["dim"]), self.meta["image_model"]
        )
        if layout is None:
            return embeddings
        return embeddings, torch.cat(token_parts) if token_parts else layout.empty()

    def image_tokens(self) -> ImageTokens:
        """The image-token layout the cache stored (`--image-tokens N` pools the grid to N)."""
        pool_to = (self.meta.get("tokens") or {}).get("image_tokens")
        return image_tokens_for(self.image, pool_to)
