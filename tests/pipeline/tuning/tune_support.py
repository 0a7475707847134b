"""Optuna configs for the tuning tests: tiny heads on a synthetic cache, written to YAML like a user would."""

from pathlib import Path

import optuna
import sqlalchemy
import yaml

from pipeline.training.pooled_heads import HeadTrainer
from pipeline.tuning import processes
from pipeline.tuning.storage import create_study, default_url


def base_config(cache: Path, **training) -> dict:
    """A small MLP/CLIP experiment on `cache` (CPU, a few epochs)."""
    return {
        "name": "tiny",
        "data": {"cache": str(cache)},
        "model": {"type": "mlp", "output_dim": 16, "hidden_dim": 32, "num_layers": 1, "dropout": 0.0},
        "loss": {"type": "clip", "temperature": 0.1},
        "training": {
            "batch_size": 8,
            "learning_rate": 1e-2,
            "num_epochs": 4,
            "patience": 10,
            "warmup_steps": 0,
            "device": "cpu",
            **training,
        },
    }


def write_optuna_config(path: Path, cache: Path, training: dict | None = None, **keys) -> Path:
    """An optuna config YAML at `path`; `keys` replace top-level entries (study_name, pruner, search_space, ...)."""
    config = {
        "study_name": "tiny_study",
        "direction": "maximize",
        "metric": "rsum",
        "sampler": {"type": "random", "seed": 0},
        "pruner": "none",
        "n_trials": 4,
        "heartbeat_interval": 1,
        "grace_period": 3,
        "base_config": base_config(cache, **(training or {})),
        "search_space": {
            "training.learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "model.hidden_dim": {"type": "categorical", "choices": [16, 32]},
        },
        **keys,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def study_trials(cwd: Path, study: str = "tiny_study") -> list[optuna.trial.FrozenTrial]:
    """The trials of `study` in the SQLite file under `cwd`; [] while the sweep has not created it yet."""
    if not (cwd / "results" / "optuna" / f"{study}.db").exists():
        return []
    url = default_url(study).replace("sqlite:///", f"sqlite:///{cwd}/")
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials()
    except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # the sweep is still creating the tables or the study
        return []


def bug_on_hidden_dim_16(run):
    """`HeadTrainer.run` that raises RuntimeError("bug") for a model of hidden_dim 16, else is `run`."""

    def buggy(self, on_epoch_end=None):
        if self.config.model.hidden_dim == 16:
            raise RuntimeError("bug")
        return run(self, on_epoch_end)

    return buggy


def work_with_a_bug(*args) -> None:
    """`processes.work(*args)` in a spawned worker whose trials with hidden_dim 16 raise RuntimeError("bug")."""
    HeadTrainer.run = bug_on_hidden_dim_16(HeadTrainer.run)
    processes.work(*args)


def ask_and_tell(settings, url: str, count: int, numbers) -> None:
    """Process target: pop `count` trials of the study at `url` (`ask`), finish each, put their numbers on `numbers`."""
    study = create_study(url, settings)
    asked = []
    for _ in range(count):
        trial = study.ask()
        study.tell(trial, 1.0)
        asked.append(trial.number)
    numbers.put(asked)
