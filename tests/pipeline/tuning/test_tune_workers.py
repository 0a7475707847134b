"""Two worker processes on one study: SQLite (the default storage) and PostgreSQL (CI starts a server)."""

import os
import uuid

import optuna
import pytest
from optuna.trial import TrialState
from tune_support import write_optuna_config

from encoding.errors import BadInput
from pipeline import cli
from pipeline.commands.tune import main as cli_tune_main
from pipeline.tuning.storage import default_url

POSTGRES_URL = os.environ.get("XALIGN_TEST_POSTGRES_URL")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _run_two_workers(config, storage: str | None, study_name: str) -> list[optuna.trial.FrozenTrial]:
    argv = ["tune", str(config), "--workers", "2", "--n-trials", "6"]
    assert cli.main(argv + (["--storage", storage] if storage else [])) == 0
    trials = optuna.load_study(study_name=study_name, storage=storage or default_url(study_name)).get_trials()
    assert sum(t.state in FINISHED for t in trials) == 6
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL)
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in trials if t.state in FINISHED}) == 2  # both processes trained
    return trials


def test_two_workers_share_an_sqlite_study(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # trials long enough (patience off) that the second spawned worker, importing torch on a loaded machine,
    # starts before the first has finished all six
    training = {"num_epochs": 40, "patience": 1000}
    config = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache, training=training)
    trials = _run_two_workers(config, None, "tiny_study")
    assert (tmp_path / "results" / "optuna" / "tiny_study" / "best_config.yaml").exists()
    sampled = [tuple(sorted(t.params.items())) for t in trials if t.state in FINISHED]
    assert len(set(sampled)) > 1  # workers seed their samplers differently


def _postgres_reachable(url: str | None) -> str | None:
    """None when `url` answers, else why not."""
    if not url:
        return "XALIGN_TEST_POSTGRES_URL is not set (.ci/run starts a local PostgreSQL server and sets it)"
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url).connect():
            return None
    except Exception as err:  # driver missing, server down, bad credentials
        return f"PostgreSQL at XALIGN_TEST_POSTGRES_URL is not reachable: {err}"


POSTGRES_PROBLEM = _postgres_reachable(POSTGRES_URL)


@pytest.mark.skipif(POSTGRES_PROBLEM is not None, reason=str(POSTGRES_PROBLEM))
def test_two_workers_share_a_postgres_study(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study_name = f"xalign_test_{uuid.uuid4().hex[:12]}"
    config = write_optuna_config(
        tmp_path / "tune.yaml", synthetic_cache, study_name=study_name, training={"num_epochs": 40, "patience": 1000}
    )
    try:
        _run_two_workers(config, POSTGRES_URL, study_name)
    finally:
        optuna.delete_study(study_name=study_name, storage=POSTGRES_URL)


def test_unreachable_storage_is_bad_input(tmp_path, capsys):
    config = write_optuna_config(tmp_path / "tune.yaml", tmp_path)
    url = "postgresql+psycopg2://nobody:secret@127.0.0.1:1/none"
    assert cli.main(["tune", str(config), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "cannot open the database" in err


def test_a_study_keeps_its_direction(synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "optuna").mkdir(parents=True)
    optuna.create_study(study_name="tiny_study", storage=default_url("tiny_study"), direction="minimize")
    config = write_optuna_config(tmp_path / "tune.yaml", synthetic_cache)
    with pytest.raises(BadInput, match=r"direction: study 'tiny_study' .* created to minimize; use another study_name"):
        cli_tune_main([str(config)])
