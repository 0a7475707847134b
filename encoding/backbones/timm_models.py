"""Image backbones through timm: `timm:NAME` (random init), `timm:NAME@pretrained` (timm's hub
weights, e.g. `timm:vit_base_patch16_224.augreg_in21k@pretrained`) or `timm:NAME@WEIGHTS_FILE`.

With neither, the model is randomly initialised (seed 0, no download is attempted): useful for
the offline demo and for tests, and said so in `describe()["weights"]`. The model's own
transform (resize, crop, mean/std from its pretrained config) is used and recorded.
"""

from pathlib import Path

import torch

from encoding.backbones import IMAGE_BACKBONES
from encoding.backbones.token_outputs import Grid, timm_tokens
from encoding.backbones.weights import load_trunk_weights, weights_digest
from encoding.errors import BadInput

HUB_WEIGHTS = "pretrained"


@IMAGE_BACKBONES.register("timm")
class TimmImage:
    """A frozen timm model with its classifier removed; pooled features are the embedding."""

    def __init__(self, name: str, device: torch.device, spec: str, seed: int = 0, image_size: int | None = None):
        import timm
        from timm.data import create_transform, resolve_data_config

        arch, _, weights = name.partition("@")
        if not timm.is_model(arch):
            raise BadInput(f"--image-model {spec}: timm has no model '{arch}'")
        torch.manual_seed(seed)  # a random-init backbone must be the same on every run and rank
        hub = weights == HUB_WEIGHTS
        self.model = timm.create_model(arch, pretrained=hub, num_classes=0)
        if weights and not hub:
            load_trunk_weights(self.model, weights, f"--image-model {spec}")
        self.model.eval().to(device)
        self.spec, self.device = spec, device
        self.weights = arch if hub else weights_digest(Path(weights)) if weights else f"random-init(seed={seed})"
        overrides = {"input_size": (3, image_size, image_size), "crop_pct": 1.0} if image_size else {}
        self.data_config = resolve_data_config(overrides, model=self.model)
        self.transform = create_transform(**self.data_config, is_training=False)
        self.dim = self.model.num_features

    def preprocess(self, image) -> torch.Tensor:
        """PIL image → (3, H, W) float tensor, with the model's own resize, crop and mean/std."""
        return self.transform(image.convert("RGB"))

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, dim)."""
        return self.model(pixels.to(self.device)).float()

    @torch.inference_mode()
    def encode_with_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Grid]:
        """(B, 3, H, W) → (B, dim) as `encode` (timm's forward is `forward_head(forward_features(x))`),
        `forward_features` as (B, T, D) tokens without prefix tokens, and their grid."""
        features = self.model.forward_features(pixels.to(self.device))
        tokens, grid = timm_tokens(self.model, features)
        return self.model.forward_head(features).float(), tokens, grid

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "timm",
            "weights": self.weights,
            "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
        }
