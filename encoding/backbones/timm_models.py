"""Image backbones through timm (`timm:NAME`, or `timm:NAME@WEIGHTS_FILE` for local weights).

With no weights file the model is randomly initialised (no download is attempted): useful for
the offline demo and for tests, and said so in `describe()["weights"]`.
"""

from pathlib import Path

import torch

from encoding.backbones import IMAGE_BACKBONES, weights_digest
from encoding.errors import BadInput


@IMAGE_BACKBONES.register("timm")
class TimmImage:
    """A frozen timm model with its classifier removed; pooled features are the embedding."""

    def __init__(
        self, name: str, device: torch.device, spec: str, seed: int = 0, image_size: int | None = None, **model_kwargs
    ):
        import timm
        from timm.data import create_transform, resolve_data_config

        arch, _, weights = name.partition("@")
        if arch not in timm.list_models():
            raise BadInput(f"--image-model {spec}: timm has no model '{arch}'")
        torch.manual_seed(seed)  # a random-init backbone must be the same on every run and rank
        self.model = timm.create_model(arch, pretrained=False, num_classes=0, **model_kwargs)
        if weights:
            if not Path(weights).is_file():
                raise BadInput(f"--image-model {spec}: weights file '{weights}' not found")
            state = torch.load(weights, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state, strict=False)
        self.model.eval().to(device)
        self.spec, self.device = spec, device
        self.weights = weights_digest(Path(weights)) if weights else f"random-init(seed={seed})"
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

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "timm",
            "weights": self.weights,
            "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
        }
