"""`xalign evaluate RUN_DIR` for backbone runs: the run's trainer rebuilt from its checkpoint embeds a split.

The towers come from the checkpoint's architectures and weights (`BackboneTrainer.restored`): no
pretrained download, no model directory. Images are decoded from the cache's paths with the run's eval
preprocessing; a two-tower run tokenises the split's caption texts, an image-only run uses the cache's
frozen caption embeddings, as in training.
"""

from dataclasses import replace
from pathlib import Path

from encoding.backbones.image_encoder import CHECKPOINT_FORMAT
from encoding.errors import BadInput
from pipeline.config.backbone import from_dict
from pipeline.data.split_tensors import SplitTensors
from pipeline.training.choice import trainer_for


def is_backbone_checkpoint(state: dict) -> bool:
    return state.get("format") == CHECKPOINT_FORMAT


def backbone_config(state: dict, path: Path):
    """The validated config of a backbone checkpoint, or BadInput naming the file."""
    try:
        return from_dict(state["config"])
    except (BadInput, KeyError) as err:
        raise BadInput(f"{path}: its config is not valid here ({err})") from err


def restored_trainer(state: dict, path: Path, config, data: SplitTensors, device: str):
    """The trainer of a backbone checkpoint `state` (read from `path`; its validated `config`), its weights
    loaded, over `data`."""
    config = replace(config, training=replace(config.training, device=device))
    cls = trainer_for(config)
    trainer = type(f"Restored{cls.__name__}", (cls,), {"restored": state})(config, data, data)
    trainer.load_weights(state, path)
    return trainer
