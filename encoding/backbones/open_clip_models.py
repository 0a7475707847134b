"""open_clip image and text towers (`open_clip:SPEC`), usable separately.

SPEC is `ARCH@PRETRAINED` (a pretrained tag such as `laion2b_s34b_b79k`, or a local checkpoint
file), `hf-hub:ORG/REPO`, `local-dir:PATH` or a directory holding `open_clip_config.json` and its
weights, or a bare `ARCH`, which is randomly initialised (seed 0, no download) and said so in
`describe()["weights"]`. The model's own transform (resize, crop, mean/std) is used and recorded.

Tokens (`encode_with_tokens`): a ViT tower's own `output_tokens` (after `ln_post`, class token dropped), a
ModifiedResNet's feature map before its attention pool, a timm tower's `forward_features`; the text
tower's final hidden states (after `ln_final`) over the whole context, real tokens masked.
"""

from pathlib import Path

import torch

from encoding.backbones import IMAGE_BACKBONES, TEXT_BACKBONES
from encoding.backbones.token_outputs import (
    Grid,
    captured,
    feature_map_tokens,
    flag_set,
    patch_tokens,
    right_padded_mask,
    timm_tokens,
)
from encoding.backbones.weights import weights_digest
from encoding.errors import BadInput

SEED = 0


def parse(name: str) -> tuple[str, str | None, str]:
    """`name` → (open_clip model name, pretrained tag or file, weights identity)."""
    if name.startswith(("hf-hub:", "local-dir:")):
        where = name.partition(":")[2]
        return name, None, weights_digest(Path(where)) if Path(where).is_dir() else name
    if Path(name).is_dir():
        return f"local-dir:{name}", None, weights_digest(Path(name))
    arch, _, pretrained = name.partition("@")
    if not pretrained:
        return arch, None, f"random-init(seed={SEED})"
    return arch, pretrained, weights_digest(Path(pretrained)) if Path(pretrained).is_file() else name


def load(name: str, spec: str, device: torch.device, image_size: int | None = None):
    """(model in eval mode on `device`, eval transform, tokenizer, weights identity)."""
    import open_clip

    model_name, pretrained, weights = parse(name)
    if ":" not in model_name and model_name not in open_clip.list_models():
        raise BadInput(f"{spec}: open_clip has no architecture '{model_name}'; see open_clip.list_models()")
    torch.manual_seed(SEED)
    options = {"force_image_size": image_size} if image_size else {}
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, pretrained_text=False, device=device, **options
        )
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        raise BadInput(f"{spec}: cannot load open_clip model ({err})") from err
    return model.eval(), transform, open_clip.get_tokenizer(model_name), weights


@IMAGE_BACKBONES.register("open_clip")
class OpenClipImage:
    """The image tower: `model.encode_image(transform(image))`."""

    def __init__(self, name: str, device: torch.device, spec: str, image_size: int | None = None):
        self.spec, self.device = spec, device
        self.model, self.transform, _, self.weights = load(name, spec, device, image_size)
        self.preprocess_cfg = dict(getattr(self.model.visual, "preprocess_cfg", {}))
        size = self.preprocess_cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.dim = self.encode(torch.zeros(1, 3, *size)).shape[-1]

    def preprocess(self, image) -> torch.Tensor:
        """PIL image → (3, H, W) with the model's own resize, crop and mean/std."""
        return self.transform(image.convert("RGB"))

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, dim), not normalised."""
        return self.model.encode_image(pixels.to(self.device)).float()

    @torch.inference_mode()
    def encode_with_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Grid]:
        """(B, 3, H, W) → (B, dim) as `encode`, the tower's spatial tokens (B, T, D) and their grid."""
        return visual_tokens(self.model.visual, pixels.to(self.device), self.spec)

    def describe(self) -> dict:
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in self.preprocess_cfg.items()}
        return {"spec": self.spec, "dim": self.dim, "library": "open_clip", "weights": self.weights, "preprocess": cfg}


@TEXT_BACKBONES.register("open_clip")
class OpenClipText:
    """The text tower: `model.encode_text(tokenizer(texts))`. Weights stay fp32 (`precision` applies as AMP)."""

    def __init__(self, name: str, device: torch.device, spec: str, precision: str = "fp32"):
        self.spec, self.device = spec, device
        self.model, _, self.tokenizer, self.weights = load(name, spec, device)
        self.dim = self.encode([""]).shape[-1]

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, dim), not normalised."""
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).float()

    @torch.inference_mode()
    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) strings → (B, dim) as `encode`, hidden states (B, context, D') after `ln_final`, mask (B, context)."""
        from open_clip.transformer import TextTransformer

        ids = self.tokenizer(texts).to(self.device)
        text = getattr(self.model, "text", None)
        if text is None:  # the CLIP class keeps the text modules on the model itself
            with captured(self.model.ln_final) as seen:
                pooled = self.model.encode_text(ids)
            hidden, pad_id = seen[0], 0
        elif isinstance(text, TextTransformer):
            with flag_set(text, "output_tokens", True):
                pooled, hidden = text(ids)
            pad_id = text.pad_id
        else:
            raise BadInput(f"--tokens: {self.spec}'s text tower {type(text).__name__} gives no tokens here")
        return pooled.float(), hidden, right_padded_mask(ids, pad_id)

    @property
    def max_tokens(self) -> int:
        """The tokenizer's context length: every caption is padded (or cut) to it."""
        return getattr(self.tokenizer, "context_length", None) or self.model.context_length

    def describe(self) -> dict:
        context = getattr(self.tokenizer, "context_length", None)
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "open_clip",
            "weights": self.weights,
            "tokenizer": {"class": type(self.tokenizer).__name__, "context_length": context},
        }


def visual_tokens(visual, pixels: torch.Tensor, spec: str) -> tuple[torch.Tensor, torch.Tensor, Grid]:
    """(pooled (B, dim) as `visual(pixels)`, spatial tokens (B, T, D), grid) from one forward of an open_clip tower."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        with flag_set(visual, "output_tokens", True):
            pooled, tokens = visual(pixels)
        keeps_class = visual.attn_pool is None and visual.pool_type == "none"
        tokens, grid = patch_tokens(tokens, 1 if keeps_class else 0, visual.grid_size)
    elif isinstance(visual, ModifiedResNet):
        with captured(visual.attnpool, "input") as seen:
            pooled = visual(pixels)
        tokens, grid = feature_map_tokens(seen[0])
    elif isinstance(visual, TimmModel):  # its forward is head(trunk(x)), trunk(x) = forward_head(forward_features(x))
        features = visual.trunk.forward_features(pixels)
        pooled = visual.head(visual.trunk.forward_head(features))
        tokens, grid = timm_tokens(visual.trunk, features)
    else:
        raise BadInput(f"--tokens: {spec}'s image tower {type(visual).__name__} gives no tokens here")
    return pooled.float(), tokens, grid
