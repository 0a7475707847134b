"""A trained image encoder as a frozen backbone: `xalign encode --image-model RUN/best.pt` (or `checkpoint:PATH`).

Reads a `best.pt`/`last.pt` written by `xalign backbone-train` (tensors and plain values only,
`weights_only=True`), rebuilds the encoder from its architecture dict and encodes with the same
eval preprocessing as training. Tokens (`encode_with_tokens`) are the trunk's final feature map before
pooling: a CNN's (B, C, h, w) map as h*w tokens, a timm ViT's tokens without its class/register tokens.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from encoding.backbones import CHECKPOINT_PREFIX, IMAGE_BACKBONES
from encoding.backbones.image_encoder import CHECKPOINT_FORMAT, build_image_encoder, eval_transform, image_size_hw
from encoding.backbones.tokens import Grid
from encoding.backbones.weights import weights_digest
from encoding.errors import BadInput


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

    @torch.inference_mode()
    def encode_with_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Grid]:
        """(B, 3, H, W) → (B, dim) as `encode`, the trunk's spatial tokens (B, T, C) and their grid."""
        features = self.model.trunk(pixels.to(self.device))
        pooled = F.normalize(self.model.head(self.model.pool(features)).float(), dim=-1)
        return (pooled, *self.model.trunk.spatial_tokens(features))

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
