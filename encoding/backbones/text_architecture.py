"""`model.text` keys → the architecture dict of a text tower (`encoding.backbones.text_encoder`), checked.

`resolve_text_architecture(values, output_dim)` refuses unknown libraries, attentions and poolings, a
sparse/dense mismatch with the model, a `max_length` beyond the model's positions and a missing
tokenizer (BadInput naming the key and the choices). For `hf` it embeds the model config and the
tokenizer files in the architecture, so a checkpoint rebuilds both offline.
"""

import json
import tempfile
from pathlib import Path

from encoding.backbones.sentence_transformers import resolve_local
from encoding.backbones.text_encoder import KEY, SCRATCH_POSITIONS, SPARSE_TYPES, TEXT_TOWERS
from encoding.errors import BadInput

POSITION_OFFSET = {"roberta": 2, "longformer": 2, "xlm-roberta": 2}  # positions reserved before the first token
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def _hf_config(arch: str, pretrained: bool, options: dict):
    """The transformers config of a local dir or hub name, or (random init) of a model type, `options` applied."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if options and pretrained:
        raise BadInput(f"{KEY}.options': changes the architecture of pretrained '{arch}'; set pretrained: false")
    try:
        if not pretrained and arch in CONFIG_MAPPING and not Path(arch).exists():
            config = AutoConfig.for_model(arch)
        else:
            config = AutoConfig.from_pretrained(resolve_local(arch))
    except (OSError, ValueError) as err:
        raise BadInput(f"{KEY}.arch': cannot load a transformers config from '{arch}' ({err})") from err
    for key, value in options.items():
        if not hasattr(config, key):
            raise BadInput(f"{KEY}.options.{key}': '{arch}' ({config.model_type}) has no config key '{key}'")
        setattr(config, key, value)
    return config


def _hf_parts(arch: str, pretrained: bool, options: dict, tokenizer_name: str | None) -> tuple[dict, dict]:
    """(model config dict, {file name: text} of the tokenizer files) of an hf tower."""
    from transformers import AutoTokenizer

    config = _hf_config(arch, pretrained, options)
    key, where = ("tokenizer", tokenizer_name) if tokenizer_name else ("arch", arch)
    where = resolve_local(where)
    if Path(where).is_dir() and not any((Path(where) / name).is_file() for name in TOKENIZER_FILES):
        raise BadInput(f"{KEY}.{key}': no tokenizer in '{where}' (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, TypeError) as err:
        raise BadInput(f"{KEY}.{key}': no tokenizer in '{where}' ({err})") from err
    if tokenizer.pad_token is None:
        raise BadInput(f"{KEY}.{key}': the tokenizer in '{where}' has no padding token; captions are batched padded")
    if len(tokenizer) > config.vocab_size:
        raise BadInput(
            f"{KEY}.{key}': the tokenizer in '{where}' has {len(tokenizer)} tokens, the model only {config.vocab_size}"
        )
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        try:
            files = {p.name: p.read_text() for p in Path(folder).iterdir() if p.is_file()}
        except UnicodeDecodeError as err:
            raise BadInput(f"{KEY}.{key}': '{where}' saves binary tokenizer files; use a fast tokenizer") from err
    return json.loads(config.to_json_string()), files


def _position_limit(library: str, architecture: dict) -> int:
    """The most tokens the tower's positions take (`scratch` sizes its positions to `max_length`, up to
    `SCRATCH_POSITIONS`)."""
    if library == "hf":
        config = architecture["hf_config"]
        return config.get("max_position_embeddings", 0) - POSITION_OFFSET.get(config["model_type"], 0)
    if library == "open_clip":
        import open_clip

        arch = architecture["arch"].partition("@")[0]
        text = (open_clip.get_model_config(arch) or {}).get("text_cfg", {})
        if text.get("hf_tokenizer_name"):
            raise BadInput(
                f"{KEY}.arch': open_clip '{arch}' takes its tokenizer from the hub ({text['hf_tokenizer_name']}), "
                "which a checkpoint cannot carry; use library hf"
            )
        return text.get("context_length", 77)
    return SCRATCH_POSITIONS


def resolve_text_architecture(values: dict, output_dim: int) -> dict:
    """The architecture dict of `model.text` values (library, arch, pretrained, tokenizer, attention, pooling,
    max_length, options; types, `attention` and the `max_length` range already checked at config load), or
    BadInput naming the key and its choices."""
    library = values["library"]
    TEXT_TOWERS.get(library, key="model.text.library")
    attention, pooling = values["attention"], values["pooling"]
    poolings = ("cls", "mean") if library == "hf" else ("eos",)
    pooling = pooling or poolings[0]
    if pooling not in poolings:
        raise BadInput(f"{KEY}.pooling': library '{library}' pools by {', '.join(poolings)}, not '{pooling}'")
    architecture = {**values, "pooling": pooling, "output_dim": output_dim}
    if library == "scratch" and values["arch"] != "clip":
        raise BadInput(
            f"{KEY}.arch': library 'scratch' builds 'clip' (sizes in model.text.options), not '{values['arch']}'"
        )
    if library == "scratch":
        unknown = sorted(set(values["options"]) - {"width", "heads", "layers"})
        if unknown:
            raise BadInput(f"{KEY}.options.{unknown[0]}': scratch takes width, heads, layers")
    if library != "hf" and values["tokenizer"] is not None:
        raise BadInput(f"{KEY}.tokenizer': hf only (scratch and open_clip bring their own)")
    if library != "hf" and values["pretrained"] is not None:
        raise BadInput(f"{KEY}.pretrained': hf only (scratch is random init; open_clip takes ARCH@PRETRAINED)")
    if library == "open_clip" and values["options"]:
        raise BadInput(f"{KEY}.options': open_clip towers are sized by their arch; options are for scratch and hf")
    if library == "hf":
        architecture["hf_config"], architecture["tokenizer_files"] = _hf_parts(
            values["arch"], values["pretrained"] is not False, values["options"], values["tokenizer"]
        )
    sparse = library == "hf" and architecture["hf_config"]["model_type"] in SPARSE_TYPES
    if attention == "self" and sparse:
        raise BadInput(f"{KEY}.attention': '{values['arch']}' attends sparsely; set attention: sparse")
    if attention == "sparse" and not sparse:
        raise BadInput(
            f"{KEY}.attention': '{values['arch']}' ({library}) attends densely; "
            f"sparse needs an hf model of type {', '.join(SPARSE_TYPES)}"
        )
    limit = _position_limit(library, architecture)
    if values["max_length"] > limit:
        raise BadInput(f"{KEY}.max_length': {values['max_length']} is beyond '{values['arch']}''s {limit} positions")
    return architecture
