"""`xalign bench recipe` steps a shipped recipe at its batch size on a synthetic cache, in a fresh process."""

import json

from pipeline.cli import main as cli


def test_bench_recipe_times_the_steps_of_a_shipped_recipe(capsys, tmp_path):
    argv = ["bench", "recipe", "configs/heads/fusemix.yaml", "--image-dim", "16", "--text-dim", "12"]
    argv += ["--set", "training.batch_size=48", "--set", "model.hidden_dim=16", "--steps", "2", "--dir", str(tmp_path)]
    assert cli(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["batch_size"] == 48 and result["dims"] == [16, 12] and result["train_pairs"] == 96
    assert len(result["seconds_per_step"]) == 2 and all(s > 0 for s in result["seconds_per_step"])
    assert result["peak_rss_gib"] > 0.05
    assert not list(tmp_path.iterdir())


def test_bench_recipe_refuses_a_bad_override(capsys):
    assert cli(["bench", "recipe", "configs/heads/sail.yaml", "--set", "training.optimizer=sgd"]) == 2
    assert "training.optimizer" in capsys.readouterr().err


def test_bench_recipe_refuses_a_zero_dim(capsys):
    assert cli(["bench", "recipe", "configs/heads/sail.yaml", "--image-dim", "0"]) == 2
    assert "--image-dim" in capsys.readouterr().err
