"""`training.optimizer: adamw|lion` and `training.betas`, and the FuseMix and SAIL recipes: bad optimizer keys are
exit 2 naming the key, Lion takes the sign step worked out by hand, a Lion run resumes exactly, and both recipes
load, build their heads and loss, and step."""

import re
from pathlib import Path

import pytest
import torch
from timm.optim import Lion

from pipeline import cli
from pipeline.config import schema
from pipeline.config.experiment import TrainingConfig, load_config
from pipeline.data.split_tensors import load_splits
from pipeline.training.optimizers import OPTIMIZERS, build_optimizer
from pipeline.training.pooled_heads import HeadTrainer

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "heads"
TINY = ["training.num_epochs=2", "training.batch_size=16", "training.device=cpu", "training.patience=100"]


def _config(directory: Path, cache: Path, training: str) -> str:
    path = directory / "c.yaml"
    path.write_text(
        f"name: x\ndata: {{cache: {cache}}}\nmodel: {{output_dim: 8, hidden_dim: 16}}\n"
        f"training: {{num_epochs: 2, batch_size: 8, device: cpu, warmup_steps: 0{training}}}\n"
    )
    return str(path)


@pytest.mark.parametrize(
    ("training", "message"),
    [
        (", optimizer: sgd", r"'training\.optimizer': 'sgd' is not one of adamw, lion"),
        (", optimizer: 3", r"'training\.optimizer': expected str, got int 3"),
        (", betas: 0.9", r"'training\.betas': expected list \| None, got float 0\.9"),
        (", betas: [0.9]", r"'training\.betas': expected a list of 2 numbers, got \[0\.9\]"),
        (", betas: [0.9, 0.99, 0.999]", r"'training\.betas': expected a list of 2 numbers"),
        (", betas: [0.9, 1.0]", r"'training\.betas': expected each item to be a number in \[0, 1\)"),
        (", betas: [-0.1, 0.9]", r"'training\.betas': expected each item to be a number in \[0, 1\)"),
        (", betas: [0.9, true]", r"'training\.betas': expected a list of 2 numbers, got \[0\.9, True\]"),
        (", betas: [0.9, .nan]", r"'training\.betas': expected each item"),
    ],
)
def test_bad_optimizer_keys_exit_2_naming_the_key(training, message, synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", _config(tmp_path, synthetic_cache, training)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"c\.yaml: config key " + message, err), err
    assert "Traceback" not in err and not (tmp_path / "results" / "x").exists()


def test_a_bad_set_override_of_betas_exits_2(synthetic_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", _config(tmp_path, synthetic_cache, ""), "--set", "training.betas=[1, 0.5]"]) == 2
    assert "config key 'training.betas': expected each item" in capsys.readouterr().err


def test_the_config_choices_are_the_registered_optimizers():
    assert list(schema.CHOICES["optimizer"]) == OPTIMIZERS.names()
    with pytest.raises(Exception, match=r"training\.optimizer: unknown optimizer 'sgd'; choose one of: adamw, lion"):
        OPTIMIZERS.get("sgd", key="training.optimizer")


@pytest.mark.parametrize(
    ("name", "betas", "cls", "expected"),
    [
        ("adamw", None, torch.optim.AdamW, (0.9, 0.999)),
        ("adamw", [0.8, 0.95], torch.optim.AdamW, (0.8, 0.95)),
        ("lion", None, Lion, (0.9, 0.99)),
        ("lion", [0.95, 0.98], Lion, (0.95, 0.98)),
    ],
)
def test_optimizer_and_betas_reach_the_optimizer(name, betas, cls, expected):
    layer = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(TrainingConfig(optimizer=name, betas=betas, weight_decay=0.5), [layer])
    assert type(optimizer) is cls
    decayed, plain = optimizer.param_groups
    assert [tuple(g["betas"]) for g in optimizer.param_groups] == [expected, expected]
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.5, 0.0)
    assert decayed["params"] == [layer.weight] and plain["params"] == [layer.bias]


def test_lion_takes_the_sign_step_worked_out_by_hand():
    """Lion with lr 0.1, wd 0.5, betas (0.5, 0.75): step t is p ← p (1 − lr·wd) − lr · sign(β1 m + (1 − β1) g),
    then m ← β2 m + (1 − β2) g (m starts at 0; biases are not decayed)."""
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.bias.fill_(0.5)
    config = TrainingConfig(optimizer="lion", learning_rate=0.1, weight_decay=0.5, betas=[0.5, 0.75])
    optimizer = build_optimizer(config, [layer])
    # step 1: g = [0.3, -4.0], bias g = -0.2; m = 0, so the update is sign(g)
    layer.weight.grad, layer.bias.grad = torch.tensor([[0.3, -4.0]]), torch.tensor([-0.2])
    optimizer.step()
    w1 = [1.0 * 0.95 - 0.1 * 1, -2.0 * 0.95 - 0.1 * -1]  # [0.85, -1.8]
    torch.testing.assert_close(layer.weight, torch.tensor([w1]))
    torch.testing.assert_close(layer.bias, torch.tensor([0.5 + 0.1]))
    # m = 0.25 g1 = [0.075, -1.0], bias m = -0.05. step 2: g = [-1.0, 1.0], bias g = 0.04
    # interpolation 0.5 m + 0.5 g = [-0.4625, 0.0], bias 0.5 * -0.05 + 0.5 * 0.04 = -0.005 -> signs [-1, 0], -1
    layer.weight.grad, layer.bias.grad = torch.tensor([[-1.0, 1.0]]), torch.tensor([0.04])
    optimizer.step()
    w2 = [w1[0] * 0.95 + 0.1, w1[1] * 0.95 - 0.0]
    torch.testing.assert_close(layer.weight, torch.tensor([w2]))
    torch.testing.assert_close(layer.bias, torch.tensor([0.6 + 0.1]))
    torch.testing.assert_close(optimizer.state[layer.weight]["exp_avg"], torch.tensor([[0.75 * 0.075 - 0.25, -0.5]]))


def _trainer(cache: Path, out_dir: Path | None, recipe: str = "mlp_baseline", *overrides: str) -> HeadTrainer:
    config = load_config(CONFIGS / f"{recipe}.yaml", [f"data.cache={cache}", *TINY, *overrides])
    splits = load_splits(cache, ["train", "val"])
    return HeadTrainer(config, splits["train"], splits["val"], out_dir)


def test_a_lion_run_trains_with_lion_and_moves_the_weights(synthetic_cache):
    trainer = _trainer(synthetic_cache, None, "mlp_baseline", "training.optimizer=lion", "model.hidden_dim=32")
    assert type(trainer.optimizer) is Lion
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_epoch(0, max_batches=1)
    changed = [not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items()]
    assert all(changed)


LION = ["training.optimizer=lion", "training.learning_rate=1e-3", "training.betas=[0.8, 0.95]", "model.hidden_dim=32"]


def test_a_lion_run_resumes_exactly(synthetic_cache, tmp_path):
    whole = _trainer(synthetic_cache, tmp_path / "whole", "mlp_baseline", *LION, "training.num_epochs=4")
    whole.run()
    interrupted = _trainer(synthetic_cache, tmp_path / "parts", "mlp_baseline", *LION, "training.num_epochs=4")
    with pytest.raises(_Stop):  # as if killed right after epoch 1 was saved
        interrupted.run(on_epoch_end=_stop_after_epoch_1)
    resumed = _trainer(synthetic_cache, tmp_path / "parts", "mlp_baseline", *LION, "training.num_epochs=4")
    resumed.resume()
    assert resumed.epoch == 2 and type(resumed.optimizer) is Lion
    resumed.run()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    for state, other in zip(whole.optimizer.state.values(), resumed.optimizer.state.values(), strict=True):
        torch.testing.assert_close(other["exp_avg"], state["exp_avg"], rtol=0, atol=0)


class _Stop(Exception):
    pass


def _stop_after_epoch_1(epoch: int, record: dict) -> None:
    if epoch == 1:
        raise _Stop


def test_a_lion_run_with_betas_resumes_through_the_cli(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, synthetic_cache, ", optimizer: lion, betas: [0.9, 0.98], learning_rate: 1e-4")
    assert cli.main(["train", config]) == 0
    saved = load_config(tmp_path / "results" / "x" / "config.yaml")
    assert (saved.training.optimizer, saved.training.betas) == ("lion", [0.9, 0.98])
    assert cli.main(["train", "results/x/config.yaml", "--resume", "--set", "training.num_epochs=3"]) == 0


def test_the_fusemix_recipe_builds_its_heads_and_steps(synthetic_cache):
    config = load_config(CONFIGS / "fusemix.yaml")
    assert (config.training.batch_size, config.training.num_epochs, config.training.optimizer) == (40960, 500, "adamw")
    assert (config.loss.type, config.loss.mixup_alpha, config.model.dropout) == ("clip", 1.0, 0.6)
    trainer = _trainer(synthetic_cache, None, "fusemix")
    image_head = trainer.model.image_head
    blocks = [m for m in image_head if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 4 and image_head[-1].out_features == 512 and blocks[0].body[1].in_features == 2048
    assert type(trainer.optimizer) is torch.optim.AdamW and trainer.optimizer.param_groups[0]["weight_decay"] == 0.1
    torch.testing.assert_close(trainer.loss.scale().detach(), torch.tensor(1 / 0.07))
    losses = [trainer.train_epoch(epoch, max_batches=2) for epoch in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_the_sail_recipe_builds_its_heads_and_steps_with_lion(synthetic_cache):
    config = load_config(CONFIGS / "sail.yaml")
    assert (config.training.batch_size, config.training.num_epochs, config.training.learning_rate) == (32768, 100, 1e-5)
    assert (config.training.optimizer, config.training.betas, config.loss.type) == ("lion", [0.9, 0.99], "siglip")
    trainer = _trainer(synthetic_cache, None, "sail")
    assert type(trainer.optimizer) is Lion and trainer.optimizer.param_groups[0]["weight_decay"] == 1e-4
    assert trainer.model.image_head[-1].out_features == 1024 and trainer.model.text_head[1].out_features == 8192
    torch.testing.assert_close(trainer.loss.scale().detach(), torch.tensor(20.0))
    assert trainer.loss.logit_bias.item() == -10.0
    before = trainer.model.text_head[1].weight.detach().clone()
    losses = [trainer.train_epoch(epoch, max_batches=2) for epoch in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    moved = (trainer.model.text_head[1].weight.detach() - before).abs().max()
    warmed_lrs = sum((step + 1) / 7000 * 1e-5 for step in range(4))  # 4 steps of the 7000-step linear warm-up
    assert 0 < moved <= 1.2 * warmed_lrs  # Lion moves a weight by at most lr per step (plus float32 rounding)
