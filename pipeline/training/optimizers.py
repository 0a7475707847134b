"""The optimizers a head or backbone run can step (`training.optimizer`), by name, over parameter groups that
decay matrices only."""

import torch

from encoding.registry import Registry

OPTIMIZERS = Registry("optimizer")  # name -> constructor(param_groups, lr=..., [betas=...]) -> torch Optimizer
OPTIMIZERS.register("adamw")(torch.optim.AdamW)


@OPTIMIZERS.register("lion")
def lion(params, **options) -> torch.optim.Optimizer:
    """timm's Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): the step is
    lr · sign(β1 m + (1 − β1) g), then m ← β2 m + (1 − β2) g; weight decay is decoupled (p ← p (1 − lr · wd)),
    as in AdamW. Betas default to (0.9, 0.99). It typically wants a 3-10x smaller learning rate than AdamW."""
    from timm.optim import Lion

    return Lion(params, **options)


def build_optimizer(training, modules) -> torch.optim.Optimizer:
    """The optimizer `training.optimizer` names over `parameter_groups(modules)`, at `training.learning_rate`,
    with `training.betas` when set (else the optimizer's own)."""
    make = OPTIMIZERS.get(training.optimizer, key="training.optimizer")
    betas = {} if training.betas is None else {"betas": tuple(training.betas)}
    return make(parameter_groups(modules, training.weight_decay), lr=training.learning_rate, **betas)


def parameter_groups(modules, weight_decay: float) -> list[dict]:
    """Optimizer groups: decay on matrices, none on biases, norms and scalar temperatures."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
