"""Tiny backbones built from configs and saved to a directory, so every spec loads offline."""

import json
from pathlib import Path

import torch
from dataset_files import WORDS

SPECIALS = ["[PAD]", "[UNK]", "<s>", "</s>"]


def word_tokenizer(eos_template: bool = True):
    """A real `PreTrainedTokenizerFast` (WordLevel over the test vocabulary) that appends </s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS + [w.capitalize() for w in WORDS] + ["query", ":"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if eos_template:
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 3)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>", eos_token="</s>"
    )


TEXT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=2,
    vocab_size=64,
    max_position_embeddings=16,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=3,
)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, patch_size=8)


def hf_model(directory: Path, family: str) -> Path:
    """A tiny transformers CLIP / SigLIP / SigLIP 2 model with tokenizer and image processor."""
    import transformers as tf

    torch.manual_seed(0)
    if family == "clip":
        model = tf.CLIPModel(
            tf.CLIPConfig(text_config=TEXT, vision_config={**VISION, "image_size": 32}, projection_dim=16)
        )
        processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    elif family == "siglip":
        model = tf.SiglipModel(tf.SiglipConfig(text_config=TEXT, vision_config={**VISION, "image_size": 32}))
        processor = tf.SiglipImageProcessor(size={"height": 32, "width": 32})
    else:
        model = tf.Siglip2Model(tf.Siglip2Config(text_config=TEXT, vision_config={**VISION, "num_patches": 16}))
        processor = tf.Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    model.save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)


OPEN_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def open_clip_model(directory: Path) -> Path:
    """A local-dir open_clip model: `open_clip_config.json` + weights of a `pretrained=None` model."""
    import open_clip

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_CFG, "preprocess_cfg": {}}))
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{directory}", pretrained=None)
    torch.save(model.state_dict(), directory / "open_clip_pytorch_model.bin")
    return directory


def decoder_model(directory: Path, padding_side: str = "right") -> Path:
    """A tiny Mistral decoder (the E5-Mistral architecture) with a tokenizer that adds no EOS itself."""
    import transformers as tf

    torch.manual_seed(2)
    config = tf.MistralConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    tf.MistralModel(config).save_pretrained(directory)
    tokenizer = word_tokenizer(eos_template=False)
    tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(directory)
    return Path(directory)
