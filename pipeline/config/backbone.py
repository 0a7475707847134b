"""Backbone-training config: YAML → frozen dataclasses, validated once at load (the same rules, the same
`loss` and `training` sections as `xalign train`).

Sections: `name`, `data` (the cache, plus loader workers), `model` (the image encoder architecture),
`augment`, `loss`, `training`. The caption side is the cache's frozen embeddings, or with `model.text`
a text tower trained too (two-tower mode) on the cache's caption texts. Unknown keys, wrong types,
out-of-range values and unknown library/pooling/loss names raise `BadInput` naming the key.
"""

import dataclasses
import re
from dataclasses import dataclass, field

from encoding.backbones.image_encoder import POOLINGS, TRUNKS
from encoding.backbones.text_encoder import SCRATCH_POSITIONS
from encoding.errors import BadInput
from encoding.safe_load import shown
from pipeline import losses
from pipeline.config.experiment import DataConfig, TrainingConfig, build_dataclass
from pipeline.losses import LossOptions

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class BackboneDataConfig(DataConfig):
    num_workers: int = 2  # DataLoader processes decoding and augmenting images


@dataclass(frozen=True)
class TextTowerConfig:
    """`model.text`: the text tower trained with the image encoder (`encoding.backbones.text_encoder`)."""

    library: str = "scratch"  # scratch (CLIP text transformer), hf (AutoModel) or open_clip (a model's text tower)
    arch: str = "clip"  # scratch: clip; hf: a local dir, hub name or (random init) model type; open_clip: ARCH[@TAG]
    tokenizer: str | None = None  # hf: a local dir or hub name to take the tokenizer from (default: arch)
    pretrained: bool | None = None  # hf: load the arch's weights (default) or random init from its config
    trainable: str = "all"  # all, none (locked) or last_N (the last N layers, then the projection)
    attention: str = "self"  # self, or sparse (an hf Longformer)
    pooling: str | None = None  # scratch/open_clip: eos; hf: cls (default) or mean
    max_length: int = 77  # tokens per caption (longer captions are truncated)
    options: dict = field(default_factory=dict)  # scratch: width, heads, layers; hf random init: config keys
    checkpointing: bool = False  # activation checkpointing in the tower (memory for time)

    def tower(self) -> dict:
        """The keys that describe the tower (`resolve_text_architecture`'s input), not how it trains."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("trainable", "checkpointing")}


@dataclass(frozen=True)
class FusionConfig:
    """`model.fusion`: text layers that cross-attend to the image feature map and score pairs (ALBEF's fusion
    encoder: image features integrated into the text encoder); trained with loss `itm`."""

    hidden_dim: int = 256
    num_heads: int = 4
    num_layers: int = 2
    dropout: float = 0.1
    rerank_k: int = 16  # dual candidates per query that validation and test re-score with the fusion layers


@dataclass(frozen=True)
class BackboneModelConfig:
    library: str = "timm"  # timm or torchvision
    arch: str = "vit_tiny_patch16_224"
    image_size: int | list = 224  # side, or [height, width]
    patch_size: int | None = None  # timm ViTs: patch side (e.g. 8 on 32x64 pairs)
    options: dict = field(default_factory=dict)  # more constructor arguments (timm ViT: depth, embed_dim, ...)
    pretrained: bool = False  # the library's hub weights (needs a network)
    weights: str | None = None  # a local state-dict file for the trunk
    pooling: str = "avg"  # avg (the trunk's own: average / class token) or attention
    hidden_dim: int = 1024
    use_bn: bool = False
    dropout: float = 0.0
    mean: list = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list = field(default_factory=lambda: list(IMAGENET_STD))
    learnable_temp: bool = True  # the loss learns its temperature (as model.learnable_temp in head configs)
    trainable: str = "all"  # all, none (the trunk locked, as LiT's image tower) or last_N (the trunk's last N blocks)
    output_dim: int | None = None  # the shared embedding width (default: the cache's caption dim, 512 with model.text)
    text: TextTowerConfig | None = None  # a text tower to train too; None: the cache's frozen caption embeddings
    fusion: FusionConfig | None = None  # cross-attention layers scoring pairs (needs model.text; loss itm)


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip
    color_jitter: float = 0.2  # brightness, contrast and saturation strength; 0 = off
    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]; 0 = off
    crop_scale: float = 0.8  # random resized crop keeps [crop_scale, 1] of the area; 1 = off


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "backbone"
    data: BackboneDataConfig = field(default_factory=BackboneDataConfig)
    model: BackboneModelConfig = field(default_factory=BackboneModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossOptions = field(default_factory=lambda: losses.options_for(LossOptions.type, {}))
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def architecture(self, output_dim: int) -> dict:
        """What `encoding.backbones.image_encoder.build_image_encoder` needs to rebuild the encoder."""
        model = {k: v for k, v in dataclasses.asdict(self.model).items() if k not in TRAINING_ONLY}
        return {**model, "output_dim": output_dim}


TRAINING_ONLY = ("learnable_temp", "trainable", "output_dim", "text", "fusion")  # model keys no encoder rebuild needs
TRAINABLE = re.compile(r"all|none|last_[1-9][0-9]*")


def trainable_layers(value: str, key: str) -> int | None:
    """`all` → None (everything trains), `none` → 0, `last_N` → N; BadInput naming `key` otherwise."""
    if not TRAINABLE.fullmatch(value):
        raise BadInput(f"config key '{key}': expected all, none or last_N (e.g. last_2), got {shown(value)}")
    return None if value == "all" else 0 if value == "none" else int(value.split("_")[1])


def _check_model(config: BackboneConfig) -> None:
    m = config.model
    size = m.image_size
    if not (isinstance(size, int) and size > 0 or len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise BadInput(f"config key 'model.image_size': expected a positive int or [height, width], got {shown(size)}")
    for key, values in (("model.mean", m.mean), ("model.std", m.std)):
        if len(values) != 3 or not all(isinstance(v, int | float) for v in values):
            raise BadInput(f"config key '{key}': expected three numbers (R, G, B), got {shown(values)}")
    if not all(v > 0 for v in m.std):
        raise BadInput(f"config key 'model.std': expected three positive numbers, got {shown(m.std)}")
    if config.training.compile:
        raise BadInput("config key 'training.compile': backbone mode runs its towers eagerly; unset it")
    trainable_layers(m.trainable, "model.trainable")
    if m.text is not None:
        trainable_layers(m.text.trainable, "model.text.trainable")
    if m.text is not None and m.text.library == "scratch" and m.text.max_length > SCRATCH_POSITIONS:
        raise BadInput(
            f"config key 'model.text.max_length': {m.text.max_length} is beyond scratch's {SCRATCH_POSITIONS} positions"
        )
    if m.fusion is not None and m.text is None:
        raise BadInput("config key 'model.fusion': reads a text tower's hidden states; add model.text")
    if m.fusion is not None and m.fusion.hidden_dim % m.fusion.num_heads:
        raise BadInput(
            f"config key 'model.fusion.hidden_dim': {m.fusion.hidden_dim} must divide by num_heads {m.fusion.num_heads}"
        )
    if (m.fusion is not None) != (config.loss.type == "itm"):
        raise BadInput(
            f"config key 'loss.type': '{config.loss.type}' with{'' if m.fusion else 'out'} model.fusion; "
            "the fusion layers train with loss itm, and itm needs them"
        )
    if m.output_dim is not None and m.output_dim < 1:
        raise BadInput(f"config key 'model.output_dim': expected a positive int, got {m.output_dim}")
    if config.training.batch_size < 2:
        raise BadInput("config key 'training.batch_size': a contrastive batch needs at least 2 images")


def with_fusion_loss(values: dict) -> dict:
    """`values` with loss type `itm` (the fusion layers' loss) when `model.fusion` is set and no type is named."""
    model = values.get("model") if isinstance(values, dict) else None
    loss = values.get("loss") if isinstance(values, dict) else None
    unnamed = loss is None or isinstance(loss, dict) and "type" not in loss
    if not isinstance(model, dict) or model.get("fusion") is None or not unnamed:
        return values
    return {**values, "loss": {**(loss or {}), "type": "itm"}}


def from_dict(values: dict) -> BackboneConfig:
    """Validate a nested dict into a `BackboneConfig`, registry names included."""
    training = values.get("training") if isinstance(values, dict) else None
    if isinstance(training, dict) and "learnable_temp" in training:
        raise BadInput("config key 'training.learnable_temp' moved to 'model.learnable_temp' (as in head configs)")
    config = build_dataclass(BackboneConfig, with_fusion_loss(values))
    TRUNKS.get(config.model.library, key="model.library")
    POOLINGS.get(config.model.pooling, key="model.pooling")
    _check_model(config)
    return config
