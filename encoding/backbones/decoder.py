"""Decoder-only embedding models such as E5-Mistral (`decoder:NAME_OR_PATH`), via transformers.

Each text gets an EOS token appended and the last token's final hidden state is its embedding
(last-token pooling, right or left padding). Weights load in fp16/bf16 on GPUs (`--precision`),
fp32 on CPU. E5-Mistral wants queries as `Instruct: TASK\\nQuery: TEXT`: give `--text-instruction`.
Tokens (`encode_with_tokens`): `last_hidden_state` of every token (the appended EOS included) and the mask.
"""

from pathlib import Path

import torch

from encoding.backbones import TEXT_BACKBONES
from encoding.backbones.hf import hide_loading_bar
from encoding.backbones.weights import weights_digest
from encoding.errors import BadInput
from encoding.runtime import PRECISIONS


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) hidden states, (B, T) mask → (B, D) state of each row's last real token."""
    if bool(attention_mask[:, -1].all()):  # left padding, or no padding
        return hidden[:, -1]
    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@TEXT_BACKBONES.register("decoder")
class DecoderText:
    """A frozen decoder LM used as a text embedder (E5-Mistral recipe)."""

    def __init__(self, name: str, device: torch.device, spec: str, precision: str = "fp32", max_length: int = 512):
        from transformers import AutoModel, AutoTokenizer

        self.spec, self.device, self.max_length = spec, device, max_length
        self.dtype = PRECISIONS[precision] if device.type == "cuda" else torch.float32
        hide_loading_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            self.model = AutoModel.from_pretrained(name, dtype=self.dtype).eval().to(device)
        except OSError as err:
            raise BadInput(f"{spec}: cannot load a transformers model from '{name}' ({err})") from err
        if self.tokenizer.eos_token_id is None:
            raise BadInput(f"{spec}: the tokenizer has no EOS token, needed for last-token pooling")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        local = Path(name).is_dir()
        self.weights = weights_digest(Path(name)) if local else name
        self.dim = self.model.config.hidden_size

    def tokenize(self, texts: list[str]) -> dict:
        """Token ids (truncated to max_length - 1) + EOS, padded into a batch."""
        ids = self.tokenizer(texts, max_length=self.max_length - 1, truncation=True, padding=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        ids = [row if row and row[-1] == eos else row + [eos] for row in ids]
        return self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, dim) float32, not normalised."""
        return self.encode_with_tokens(texts)[0]

    @torch.inference_mode()
    def encode_with_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) strings → (B, dim) as `encode`, `last_hidden_state` (B, L, D'), attention mask (B, L) bool."""
        batch = {key: value.to(self.device) for key, value in self.tokenize(texts).items()}
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return last_token_pool(hidden, batch["attention_mask"]).float(), hidden, batch["attention_mask"].bool()

    @property
    def max_tokens(self) -> int:
        return self.max_length

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "dim": self.dim,
            "library": "transformers",
            "weights": self.weights,
            "pooling": "last-token (EOS appended)",
            "weights_dtype": str(self.dtype).removeprefix("torch."),
            "max_length": self.max_length,
            "padding_side": self.tokenizer.padding_side,
        }
