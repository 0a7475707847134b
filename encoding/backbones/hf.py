"""CLIP, SigLIP and SigLIP 2 through transformers (`hf:NAME_OR_PATH`); image and text towers separately.

The image tower is `model.get_image_features(**image_processor(image))`, the text tower
`model.get_text_features(**tokenizer(texts, ...))` with the padding each family was trained with
(SigLIP: to `max_length`). A local directory written by `save_pretrained` works offline.
"""

from pathlib import Path

import torch

from encoding.backbones import IMAGE_BACKBONES, TEXT_BACKBONES
from encoding.backbones.weights import weights_digest
from encoding.errors import BadInput

# How each family pads text: to the longest in the batch (CLIP) or to the position limit (SigLIP).
TEXT_PADDING = {"clip": "longest", "siglip": "max_length", "siglip2": "max_length"}


def _features(output) -> torch.Tensor:
    """transformers ≥ 5 returns a model output whose `pooler_output` is the projected feature."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load(name: str, spec: str, device: torch.device):
    """(model in eval mode on `device`, weights identity); `BadInput` for unsupported families."""
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as err:
        raise BadInput(f"{spec}: cannot load a transformers config from '{name}' ({err})") from err
    if config.model_type not in TEXT_PADDING:
        raise BadInput(f"{spec}: model type '{config.model_type}' is not one of {sorted(TEXT_PADDING)}")
    model = AutoModel.from_pretrained(name).eval().to(device)
    local = Path(name).is_dir()
    revision = getattr(config, "_commit_hash", None)
    weights = weights_digest(Path(name)) if local else f"{name}@{revision}" if revision else name
    return model, weights


def _to(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _stack(items: list[dict]) -> dict:
    return torch.utils.data.default_collate(items)


@IMAGE_BACKBONES.register("hf")
class HFImage:
    """Image tower of a transformers CLIP / SigLIP / SigLIP 2 model, with its own image processor."""

    def __init__(self, name: str, device: torch.device, spec: str, image_size: int | None = None):
        from PIL import Image
        from transformers import AutoImageProcessor

        if image_size:
            raise BadInput(f"{spec}: --image-size does not apply; the image processor fixes the size")
        self.spec, self.device = spec, device
        self.model, self.weights = load(name, spec, device)
        self.processor = AutoImageProcessor.from_pretrained(name)
        self.dim = self.encode(_stack([self.preprocess(Image.new("RGB", (32, 32)))])).shape[-1]

    def preprocess(self, image) -> dict:
        """PIL image → dict of per-image tensors (`pixel_values` (3, H, W); SigLIP 2 adds its patch mask)."""
        batch = self.processor(images=image.convert("RGB"), return_tensors="pt")
        return {key: value[0] for key, value in batch.items()}

    @torch.inference_mode()
    def encode(self, pixels: dict) -> torch.Tensor:
        """Batched processor output (`pixel_values` (B, 3, H, W), ...) → (B, dim), not normalised."""
        return _features(self.model.get_image_features(**_to(pixels, self.device))).float()

    def describe(self) -> dict:
        settings = self.processor.to_dict()
        keep = ("size", "crop_size", "do_center_crop", "image_mean", "image_std", "resample", "max_num_patches")
        preprocess = {key: settings[key] for key in keep if key in settings}
        preprocess["processor"] = type(self.processor).__name__
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "transformers",
            "weights": self.weights,
            "preprocess": preprocess,
        }


@TEXT_BACKBONES.register("hf")
class HFText:
    """Text tower of a transformers CLIP / SigLIP / SigLIP 2 model, with its own tokenizer.

    Weights stay fp32; `precision` applies as AMP around `encode`.
    """

    def __init__(self, name: str, device: torch.device, spec: str, precision: str = "fp32"):
        from transformers import AutoTokenizer

        self.spec, self.device = spec, device
        self.model, self.weights = load(name, spec, device)
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        self.padding = TEXT_PADDING[self.model.config.model_type]
        self.max_length = self.model.config.text_config.max_position_embeddings
        self.dim = self.encode([""]).shape[-1]

    def tokenize(self, texts: list[str]) -> dict:
        """The tokenizer call each family documents (SigLIP pads to max_length)."""
        return self.tokenizer(
            texts, padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, dim), not normalised."""
        inputs = {k: v for k, v in self.tokenize(texts).items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**_to(inputs, self.device))).float()

    def describe(self) -> dict:
        tokenizer = {"class": type(self.tokenizer).__name__, "padding": self.padding, "max_length": self.max_length}
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "transformers",
            "weights": self.weights,
            "tokenizer": tokenizer,
        }
