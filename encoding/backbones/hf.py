"""CLIP, SigLIP and SigLIP 2 through transformers (`hf:NAME_OR_PATH`); image and text towers separately.

The image tower is `model.get_image_features(**image_processor(image))`, the text tower
`model.get_text_features(**tokenizer(texts, ...))` with the padding each family was trained with
(SigLIP: to `max_length`). A local directory written by `save_pretrained` works offline.

Tokens (`encode_with_tokens`, from the same forward): the towers' `last_hidden_state`. Image: CLIP's
encoder output without its class token (before `post_layernorm`, which CLIP applies to the class token
only), SigLIP's after `post_layernorm`; SigLIP 2 (NaFlex) gives `max_num_patches` tokens per image in
the processor's patch order, each image's own h x w patches first and zeros at its padding patches (no
fixed grid). Text: `last_hidden_state` (after `final_layer_norm`) with the tokenizer's attention mask.
"""

from pathlib import Path

import torch

from encoding.backbones import IMAGE_BACKBONES, TEXT_BACKBONES
from encoding.backbones.token_outputs import Grid, patch_tokens
from encoding.backbones.weights import weights_digest
from encoding.errors import BadInput

# How each family pads text: to the longest in the batch (CLIP) or to the position limit (SigLIP).
TEXT_PADDING = {"clip": "longest", "siglip": "max_length", "siglip2": "max_length"}
CLASS_TOKENS = {"clip": 1, "siglip": 0, "siglip2": 0}  # prefix tokens in the vision tower's last_hidden_state


def _hidden(output, spec: str):
    """The model output carrying `last_hidden_state` (transformers >= 5), or BadInput for older versions."""
    if isinstance(output, torch.Tensor):
        raise BadInput(f"--tokens with {spec} needs transformers >= 5 (its feature calls return hidden states)")
    return output


def _features(output) -> torch.Tensor:
    """transformers ≥ 5 returns a model output whose `pooler_output` is the projected feature."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def hide_loading_bar() -> None:
    """Hide transformers' `Loading weights` bar, drawn on every model load; the hub's download bars stay
    (unless HF_HUB_DISABLE_PROGRESS_BARS hides them). Library warnings are untouched."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging

    downloads_shown = not are_progress_bars_disabled()
    logging.disable_progress_bar()  # also hides the hub's bars: shown again below
    if downloads_shown:
        enable_progress_bars()


def load(name: str, spec: str, device: torch.device):
    """(model in eval mode on `device`, weights identity); `BadInput` for unsupported families."""
    from transformers import AutoConfig, AutoModel

    hide_loading_bar()
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

    @torch.inference_mode()
    def encode_with_tokens(self, pixels: dict) -> tuple[torch.Tensor, torch.Tensor, Grid]:
        """Batched processor output → (B, dim) as `encode`, patch tokens (B, T, D), their grid (None for SigLIP 2)."""
        inputs = _to(pixels, self.device)
        output = _hidden(self.model.get_image_features(**inputs), self.spec)
        config = self.model.config.vision_config
        tokens = output.last_hidden_state
        if "pixel_attention_mask" in inputs:  # SigLIP 2: variable patch grids, padded to max_num_patches
            tokens = tokens.masked_fill(~inputs["pixel_attention_mask"].bool()[..., None], 0)
            grid = None
        else:
            grid = (config.image_size // config.patch_size,) * 2
        tokens, grid = patch_tokens(tokens, CLASS_TOKENS[self.model.config.model_type], grid)
        return output.pooler_output.float(), tokens, grid

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
            texts,
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
            return_tensors="pt",
        )

    def model_inputs(self, batch: dict) -> dict:
        """The ids, and the attention mask where the tokenizer lists it among its model inputs."""
        names = [k for k in ("input_ids", "attention_mask") if k in self.tokenizer.model_input_names]
        return _to({k: batch[k] for k in names}, self.device)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, dim), not normalised."""
        return _features(self.model.get_text_features(**self.model_inputs(self.tokenize(texts)))).float()

    @torch.inference_mode()
    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) strings → (B, dim) as `encode`, `last_hidden_state` (B, L, D'), the tokenizer's mask (B, L) bool."""
        batch = self.tokenize(texts)
        output = _hidden(self.model.get_text_features(**self.model_inputs(batch)), self.spec)
        mask = batch["attention_mask"].to(self.device).bool()
        return output.pooler_output.float(), output.last_hidden_state, mask

    @property
    def max_tokens(self) -> int:
        return self.max_length

    def describe(self) -> dict:
        tokenizer = {"class": type(self.tokenizer).__name__, "padding": self.padding, "max_length": self.max_length}
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "transformers",
            "weights": self.weights,
            "tokenizer": tokenizer,
        }
