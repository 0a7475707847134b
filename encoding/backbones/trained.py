"""Trained towers as frozen backbones: `xalign encode --image-model RUN/best.pt` (or `checkpoint:PATH`), and
`--text-model RUN/best.pt` for a two-tower run.

Reads a `best.pt`/`last.pt` written by `xalign backbone-train` (tensors and plain values only,
`weights_only=True`; its sha256 checked against the run's `checkpoints.json`), rebuilds the encoder from its
architecture dict and encodes with the same eval preprocessing (or tokenizer) as training. Tokens
(`encode_with_tokens`) are the trunk's final feature map before pooling: a CNN's (B, C, h, w) map as h*w
tokens, a timm ViT's tokens without its class/register tokens.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from encoding.backbones import CHECKPOINT_PREFIX, IMAGE_BACKBONES, TEXT_BACKBONES
from encoding.backbones.image_encoder import CHECKPOINT_FORMAT, build_image_encoder, eval_transform, image_size_hw
from encoding.backbones.text_encoder import build_text_encoder, text_tokenizer
from encoding.backbones.token_outputs import Grid
from encoding.checkpoint_hashes import RECORD, verified_sha256
from encoding.errors import BadInput


def read_checkpoint(path: Path, spec: str, option: str = "--image-model") -> tuple[dict, str]:
    """A `best.pt`/`last.pt` written by `xalign backbone-train` and what identifies its weights (the first 16 hex
    digits of its sha256, checked against the run's record), or BadInput saying what it is not."""
    if not path.is_file():
        raise BadInput(f"{option} {spec}: checkpoint '{path}' not found")
    digest = verified_sha256(path, way_out=f"remove its entry from {path.parent / RECORD} to use it unchecked")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one holding arbitrary objects
        raise BadInput(f"{option} {spec}: '{path}' is not a readable torch checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BadInput(f"{option} {spec}: '{path}' is not an encoder checkpoint of `xalign backbone-train`")
    return payload, digest[:16]


@IMAGE_BACKBONES.register(CHECKPOINT_PREFIX)
class CheckpointImage:
    """A trained encoder from a `xalign backbone-train` checkpoint: embeddings are its projections (dim = text dim)."""

    def __init__(self, name: str, device: torch.device, spec: str, image_size: int | None = None):
        path = Path(name)
        payload, weights = read_checkpoint(path, spec)
        self.architecture = payload["architecture"]
        if image_size is not None and image_size_hw(image_size) != image_size_hw(self.architecture["image_size"]):
            raise BadInput(
                f"--image-size {image_size}: '{path}' was trained at size {self.architecture['image_size']}; omit it"
            )
        self.model = build_image_encoder(**self.architecture)
        self.model.load_state_dict(payload["encoder"])
        self.model.eval().to(device)
        self.spec, self.device, self.weights = spec, device, weights
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
        pooled, tokens, grid = self.model.forward_with_tokens(pixels.to(self.device))
        return F.normalize(pooled.float(), dim=-1), tokens, grid

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


@TEXT_BACKBONES.register(CHECKPOINT_PREFIX)
class CheckpointText:
    """The text tower of a two-tower `xalign backbone-train` checkpoint: its projections, its tokenizer."""

    def __init__(self, name: str, device: torch.device, spec: str, precision: str = "fp32"):
        path = Path(name)
        payload, weights = read_checkpoint(path, spec, "--text-model")
        if "text_architecture" not in payload:
            config = payload.get("config", {}).get("data", {}).get("cache", "its cache")
            raise BadInput(
                f"--text-model {spec}: '{path}' trained the image encoder alone against frozen caption "
                f"embeddings; encode text with the text model of {config}"
            )
        self.architecture = payload["text_architecture"]
        self.model = build_text_encoder(self.architecture)
        self.model.load_state_dict(payload["text_encoder"])
        self.model.eval().to(device)
        self.tokenize = text_tokenizer(self.architecture)
        self.spec, self.device = spec, device
        self.weights, self.dim = weights, self.architecture["output_dim"]

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, dim), not normalised (precision: the caller's autocast)."""
        return self.encode_with_tokens(texts)[0]

    @torch.inference_mode()
    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) strings → (B, dim) as `encode`, the tower's final hidden states (B, L, W), mask (B, L) bool."""
        ids, mask = (x.to(self.device) for x in self.tokenize(list(texts)))
        pooled, tokens = self.model.forward_with_tokens(ids, mask)
        return pooled.float(), tokens.float(), mask

    @property
    def max_tokens(self) -> int:
        return self.architecture["max_length"]

    def describe(self) -> dict:
        arch = self.architecture
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": f"xalign-backbone text tower ({arch['library']}:{arch['arch']})",
            "weights": self.weights,
            "architecture": {k: v for k, v in arch.items() if k not in ("hf_config", "tokenizer_files")},
        }
