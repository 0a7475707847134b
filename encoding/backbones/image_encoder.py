"""The image encoder `xalign backbone-train` trains end to end: trunk → pooling → projection.

An encoder is a trunk from timm or torchvision (chosen by name), a pooling over its final feature
map (the trunk's own average / class-token pooling, or learned attention pooling) and a projection
head into the text embedding space. `build_image_encoder(**architecture)` rebuilds one from the
architecture dict a checkpoint stores (`CHECKPOINT_FORMAT`); `encoding.backbones.trained` loads such
a checkpoint as a frozen backbone for `xalign encode`.
"""

import torch
from torch import nn

from encoding.backbones.token_outputs import Grid, feature_map_tokens, timm_tokens
from encoding.backbones.weights import load_trunk_weights
from encoding.errors import BadInput
from encoding.registry import Registry

TRUNKS = Registry("backbone library")
POOLINGS = Registry("pooling")
CHECKPOINT_FORMAT = "xalign-backbone"
_WEIGHTS_KEY = "config key 'model.weights'"


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
            load_trunk_weights(self.model, weights, _WEIGHTS_KEY)

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

    def spatial_tokens(self, features: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """`forward` output → (B, T, C) spatial tokens (ViT prefix tokens dropped) and their grid."""
        return timm_tokens(self.model, features)


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
            load_trunk_weights(model, weights, _WEIGHTS_KEY)
        children = list(model.named_children())
        cut = next((i for i, (_, m) in enumerate(children) if isinstance(m, nn.AdaptiveAvgPool2d)), None)
        if cut is None:
            raise BadInput(f"config key 'model.arch': torchvision '{arch}' has no global average pool to cut at")
        self.features = nn.Sequential(*(m for _, m in children[:cut]))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))

    def spatial_tokens(self, features: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """(B, C, h, w) → ((B, h*w, C) row-major, (h, w))."""
        return feature_map_tokens(features)


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

    def forward_with_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Grid]:
        """(B, output_dim) as `forward`, the trunk's spatial tokens (B, T, C) and their grid, from one pass."""
        features = self.trunk(pixels)
        return (self.head(self.pool(features)), *self.trunk.spatial_tokens(features))


def build_image_encoder(**architecture) -> ImageEncoder:
    """The encoder an architecture dict describes (library, arch, image_size, output_dim, ..., mean, std)."""
    return ImageEncoder(**{**architecture, "pretrained": False, "weights": None})
