"""The one place that picks a trainer for a validated config, whatever the run kind.

Head configs (`ExperimentConfig`): pooled vectors (`HeadTrainer`), a dual token head (`TokenTrainer`) or a
cross encoder (`CrossEncoderTrainer`). Backbone configs (`BackboneConfig`): the image encoder alone, two
towers (`model.text`), or two towers with fusion layers (`model.fusion`).
"""

from pipeline.config.backbone import BackboneConfig
from pipeline.heads import takes_tokens
from pipeline.training.backbone import BackboneTrainer
from pipeline.training.fusion import FusedTwoTowerTrainer
from pipeline.training.loop import Trainer
from pipeline.training.pooled_heads import HeadTrainer
from pipeline.training.token_heads import CrossEncoderTrainer, TokenTrainer
from pipeline.training.two_tower import TwoTowerTrainer


def trainer_for(config) -> type[Trainer]:
    """The trainer class that trains `config` (a head or a backbone config)."""
    m = config.model
    if isinstance(config, BackboneConfig):
        if m.text is None:
            return BackboneTrainer
        return TwoTowerTrainer if m.fusion is None else FusedTwoTowerTrainer
    if m.scores_pairs:
        return CrossEncoderTrainer
    return TokenTrainer if takes_tokens(m) else HeadTrainer
