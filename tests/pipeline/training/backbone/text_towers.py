"""Tiny text towers for two-tower tests: transformers models at random init saved with a WordPiece tokenizer
to a directory (as `save_pretrained` writes them), and `model.text` sections for each library."""

from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789.,")


def save_tokenizer(folder: Path) -> int:
    """A WordPiece tokenizer over single characters (any lower-case English text tokenises into them, no
    [UNK]); its vocab size."""
    from transformers import BertTokenizerFast

    vocab = SPECIALS + CHARACTERS + [f"##{c}" for c in CHARACTERS]
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(folder)
    return len(vocab)


def tiny_distilbert(folder: Path) -> Path:
    """A 2-layer, 32-wide DistilBERT (64 positions) and its tokenizer in `folder`."""
    from transformers import DistilBertConfig, DistilBertModel

    vocab = save_tokenizer(folder)
    config = DistilBertConfig(
        vocab_size=vocab, dim=32, hidden_dim=64, n_layers=2, n_heads=2, max_position_embeddings=64
    )
    DistilBertModel(config).save_pretrained(folder)
    return folder


def tiny_longformer(folder: Path) -> Path:
    """A 2-layer, 32-wide Longformer (window 4, 66 positions, so 64 tokens) and its tokenizer in `folder`."""
    from transformers import LongformerConfig, LongformerModel

    vocab = save_tokenizer(folder)
    config = LongformerConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        attention_window=4,
        max_position_embeddings=66,
        pad_token_id=0,
    )
    LongformerModel(config).save_pretrained(folder)
    return folder


SCRATCH = {"library": "scratch", "max_length": 24, "options": {"width": 32, "heads": 2, "layers": 2}}


def hf_text(folder: Path, **keys) -> dict:
    return {"library": "hf", "arch": str(folder), "max_length": 24, **keys}
