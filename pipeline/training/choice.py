"""Which trainer a backbone config trains with."""

from pipeline.training.backbone import BackboneTrainer
from pipeline.training.fusion import FusedTwoTowerTrainer
from pipeline.training.two_tower import TwoTowerTrainer


def trainer_class(config) -> type[BackboneTrainer]:
    """The image encoder alone (no `model.text`), two towers, or two towers with fusion layers (`model.fusion`)."""
    if config.model.text is None:
        return BackboneTrainer
    return TwoTowerTrainer if config.model.fusion is None else FusedTwoTowerTrainer
