"""Image encoders trained end to end by `xalign backbone-train`, and loading one as a frozen backbone.

An encoder is a trunk from timm or torchvision (chosen by name), a pooling over its final feature
map (the trunk's own average / class-token pooling, or learned attention pooling) and a projection
head into the text embedding space. `build_image_encoder(**architecture)` rebuilds one from the
architecture dict a checkpoint stores, so `xalign encode --image-model PATH/best.pt` (or
`checkpoint:PATH`) encodes with the trained encoder and the same eval preprocessing as training.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoding.backbones import CHECKPOINT_PREFIX, IMAGE_BACKBONES, weights_digest
from encoding.errors import BadInput
from encoding.registry import Registry

TRUNKS = Registry("backbone library")
POOLINGS = Registry("pooling")
CHECKPOINT_FORMAT = "xalign-backbone"


def image_size_hw(size) -> tuple[int, int]:
    """`224` or `[32, 64]` → (H, W)."""
    height, width = (size, size) if isinstance(size, int) else size
    return int(height), int(width)


def eval_transform(image_size, mean, std):
    """PIL image → (3, H, W) float tensor: resize to exactly (H, W), then normalise with mean/std."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(image_size_hw(image_size), antialias=True),
            transforms.ToTensor(),
            transforms.Normalize(list(mean), list(std)),
        ]
    )


def load_trunk_weights(model: nn.Module, path: str) -> None:
    """Load a local state dict into `model`; classifier weights may be extra, nothing may be missing."""
    if not Path(path).is_file():
        raise BadInput(f"config key 'model.weights': file '{path}' not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        missing = model.load_state_dict(state, strict=False).missing_keys
    except RuntimeError as err:
        raise BadInput(f"config key 'model.weights': '{path}' does not fit this architecture ({err})") from err
    if missing:
        raise BadInput(f"config key 'model.weights': '{path}' lacks weights of this architecture, e.g. {missing[:3]}")


@TRUNKS.register("timm")
class TimmTrunk(nn.Module):
    """A timm model without classifier; `forward` → its final feature map, (B, C, h, w) or (B, T, C) tokens."""

    def __init__(self, arch: str, image_size, patch_size=None, options=None, pretrained=False, weights=None):
        super().__init__()
        import timm

        if not timm.is_model(arch):
            raise BadInput(f"config key 'model.arch': timm has no model '{arch}'")
        kwargs = {**(options or {}), **({} if patch_size is None else {"patch_size": patch_size})}
        try:  # transformers are built for the image size; CNNs take any size and reject the argument
            self.model = timm.create_model(
                arch, pretrained, num_classes=0, img_size=image_size_hw(image_size), **kwargs
            )
        except TypeError as err:
            if "img_size" not in str(err):
                raise BadInput(f"config key 'model.options': timm '{arch}' rejects {sorted(kwargs)} ({err})") from err
            self.model = self._create_without_size(timm, arch, pretrained, kwargs)
        if weights:
            load_trunk_weights(self.model, weights)

    @staticmethod
    def _create_without_size(timm, arch: str, pretrained: bool, kwargs: dict) -> nn.Module:
        try:
            return timm.create_model(arch, pretrained, num_classes=0, **kwargs)
        except TypeError as err:
            raise BadInput(f"config key 'model.options': timm '{arch}' rejects {sorted(kwargs)} ({err})") from err

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(pixels)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The model's own pooling (average for CNNs, class token for ViTs) → (B, C)."""
        return self.model.forward_head(features, pre_logits=True)


@TRUNKS.register("torchvision")
class TorchvisionTrunk(nn.Module):
    """A torchvision CNN cut before its global average pool; `forward` → (B, C, h, w)."""

    def __init__(self, arch: str, image_size, patch_size=None, options=None, pretrained=False, weights=None):
        super().__init__()
        import torchvision

        if arch not in torchvision.models.list_models(torchvision.models):
            raise BadInput(f"config key 'model.arch': torchvision has no classification model '{arch}'")
        if patch_size is not None:
            raise BadInput("config key 'model.patch_size': only timm ViTs take a patch size")
        model = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None, **(options or {}))
        if weights:
            load_trunk_weights(model, weights)
        children = list(model.named_children())
        cut = next((i for i, (_, m) in enumerate(children) if isinstance(m, nn.AdaptiveAvgPool2d)), None)
        if cut is None:
            raise BadInput(f"config key 'model.arch': torchvision '{arch}' has no global average pool to cut at")
        self.features = nn.Sequential(*(m for _, m in children[:cut]))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))


def as_tokens(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) feature map or (B, T, C) tokens → (B, T, C)."""
    return features.flatten(2).transpose(1, 2) if features.ndim == 4 else features


@POOLINGS.register("avg")
class TrunkPooling(nn.Module):
    """The trunk's own global pooling: average over the feature map, or the ViT's class token."""

    def __init__(self, trunk: nn.Module, channels: int):
        super().__init__()
        self.pool = trunk.pool

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(features)


@POOLINGS.register("attention")
class AttentionPooling(nn.Module):
    """Learned attention pooling: softmax of a linear score per position → weighted sum, (B, T, C) → (B, C)."""

    def __init__(self, trunk: nn.Module, channels: int):
        super().__init__()
        self.score = nn.Linear(channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = as_tokens(features)
        weights = self.score(tokens).softmax(dim=1)  # (B, T, 1)
        return (weights * tokens).sum(dim=1)


class ProjectionHead(nn.Sequential):
    """Linear → [BatchNorm] → GELU → [Dropout] → Linear → [BatchNorm]: (B, C) → (B, output_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, output_dim: int, use_bn: bool, dropout: float):
        layers = [nn.Linear(in_dim, hidden_dim), *([nn.BatchNorm1d(hidden_dim)] if use_bn else []), nn.GELU()]
        layers += [*([nn.Dropout(dropout)] if dropout > 0 else []), nn.Linear(hidden_dim, output_dim)]
        super().__init__(*layers, *([nn.BatchNorm1d(output_dim)] if use_bn else []))


class ImageEncoder(nn.Module):
    """Trunk → pooling → projection: (B, 3, H, W) pixels → (B, output_dim) unnormalised embeddings."""

    def __init__(
        self,
        library,
        arch,
        image_size,
        output_dim,
        hidden_dim,
        pooling="avg",
        use_bn=False,
        dropout=0.0,
        patch_size=None,
        options=None,
        pretrained=False,
        weights=None,
        mean=None,  # preprocessing: used by `eval_transform`, stored with the architecture
        std=None,
    ):
        super().__init__()
        self.trunk = TRUNKS.get(library, key="model.library")(
            arch, image_size, patch_size, options, pretrained, weights
        )
        with torch.no_grad():
            probe = self.trunk.eval()(torch.zeros(1, 3, *image_size_hw(image_size)))
        channels = probe.shape[1] if probe.ndim == 4 else probe.shape[-1]
        self.pool = POOLINGS.get(pooling, key="model.pooling")(self.trunk, channels)
        self.head = ProjectionHead(channels, hidden_dim, output_dim, use_bn, dropout)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.trunk(pixels)))


def build_image_encoder(**architecture) -> ImageEncoder:
    """The encoder an architecture dict describes (library, arch, image_size, output_dim, ..., mean, std)."""
    return ImageEncoder(**{**architecture, "pretrained": False, "weights": None})


def read_checkpoint(path: Path, spec: str) -> dict:
    """A `best.pt`/`last.pt` written by `xalign backbone-train`, or BadInput saying what it is not."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one holding arbitrary objects
        raise BadInput(f"--image-model {spec}: '{path}' is not a readable torch checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BadInput(f"--image-model {spec}: '{path}' is not an image-encoder checkpoint of `xalign backbone-train`")
    return payload


@IMAGE_BACKBONES.register(CHECKPOINT_PREFIX)
class CheckpointImage:
    """A trained encoder from a `xalign backbone-train` checkpoint: embeddings are its projections (dim = text dim)."""

    def __init__(self, name: str, device: torch.device, spec: str, image_size: int | None = None):
        path = Path(name)
        if not path.is_file():
            raise BadInput(f"--image-model {spec}: checkpoint '{path}' not found")
        payload = read_checkpoint(path, spec)
        self.architecture = payload["architecture"]
        if image_size is not None and image_size_hw(image_size) != image_size_hw(self.architecture["image_size"]):
            raise BadInput(
                f"--image-size {image_size}: '{path}' was trained at size {self.architecture['image_size']}; omit it"
            )
        self.model = build_image_encoder(**self.architecture)
        self.model.load_state_dict(payload["encoder"])
        self.model.eval().to(device)
        self.spec, self.device, self.weights = spec, device, weights_digest(path)
        self.transform = eval_transform(
            self.architecture["image_size"], self.architecture["mean"], self.architecture["std"]
        )
        self.dim = self.architecture["output_dim"]

    def preprocess(self, image) -> torch.Tensor:
        """PIL image → (3, H, W): the training run's eval preprocessing."""
        return self.transform(image.convert("RGB"))

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, dim), L2-normalised."""
        return F.normalize(self.model(pixels.to(self.device)).float(), dim=-1)

    def describe(self) -> dict:
        arch = self.architecture
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": f"xalign-backbone ({arch['library']}:{arch['arch']})",
            "weights": self.weights,
            "architecture": {k: v for k, v in arch.items() if k not in ("mean", "std")},
            "preprocess": {
                "image_size": list(image_size_hw(arch["image_size"])),
                "resize": "exact, bilinear",
                "mean": list(arch["mean"]),
                "std": list(arch["std"]),
            },
        }
