"""Study storage: an SQLite file under `results/optuna/` by default, or any Optuna RDB URL (PostgreSQL
for several machines).

Every storage has a heartbeat, so a trial left RUNNING by a killed process is failed after
`grace_period` seconds and re-queued by `RetryFailedTrialCallback`. SQLite is opened in WAL mode
with a long busy timeout and `synchronous=NORMAL`, so several worker processes share one file
without "database is locked" errors and each per-epoch report costs about a millisecond. Every SQLite
transaction takes the write lock when it begins (`BEGIN IMMEDIATE`): SQLite ignores `SELECT ... FOR UPDATE`,
so Optuna's read-then-update of a trial's state would otherwise let two workers pop the same enqueued or
retried trial and both run it.
(Optuna's JournalStorage has no heartbeat, so a killed trial would stay RUNNING forever.)

A storage that cannot be used (an unknown scheme, a missing driver, an unreachable server, a path that
cannot be written, a file that is not a database) is BadInput naming the URL with its password masked;
the password appears in no message.
"""

import contextlib
import re
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from sqlalchemy import event
from sqlalchemy.engine import make_url

from encoding.errors import BadInput
from pipeline.tuning.settings import TuneSettings

RESULTS = Path("results") / "optuna"
SQLITE_BUSY_TIMEOUT_S = 600


def default_url(study_name: str) -> str:
    """`sqlite:///results/optuna/<study>.db`, relative to the working directory."""
    return f"sqlite:///{RESULTS / f'{study_name}.db'}"


def artifacts_dir(study_name: str) -> Path:
    return RESULTS / study_name


def open_storage(url: str, settings: TuneSettings) -> RDBStorage:
    """An RDB storage with heartbeat and retry of stale trials; SQLite tuned for several processes."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as err:  # unparsable, or a port that is not a number
        raise storage_error(url, "not a database URL", err) from err
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        _prepare_sqlite_file(url, parsed.database)
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if is_sqlite else {"pool_pre_ping": True}
    storage = _connect(url, engine_kwargs, settings)
    if is_sqlite:
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        event.listen(storage.engine, "begin", _begin_immediate)
        storage.engine.dispose()  # connections opened from now on get the pragmas
    return storage


def _connect(url: str, engine_kwargs: dict, settings: TuneSettings, attempts: int = 3) -> RDBStorage:
    """`RDBStorage(url)`, retried: processes started together on a new database race to create its tables."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=settings.heartbeat_interval,
                    grace_period=settings.grace_period,
                    **retry_callback(settings.max_retry),
                )
        except ImportError as err:
            raise storage_error(url, "the database driver is not installed", err) from err
        except sqlalchemy.exc.NoSuchModuleError as err:
            raise storage_error(url, "unknown database scheme; use sqlite:///PATH or postgresql://...", err) from err
        except sqlalchemy.exc.DatabaseError as err:
            if attempt == attempts - 1:
                raise storage_error(url, "cannot open the database", err.orig) from err
            time.sleep(1 + attempt)


def retry_callback(max_retry: int) -> dict:
    """The storage argument that re-queues heartbeat-stale trials: Optuna >= 4.9 names it
    `heartbeat_stale_trial_callback`; older releases take `failed_trial_callback=RetryFailedTrialCallback`."""
    storages = optuna.storages
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)}
    return {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=max_retry)}


def _prepare_sqlite_file(url: str, database: str | None) -> None:
    """Create the directory and switch the file to WAL (a persistent property of the database file)."""
    if not database or database == ":memory:":
        raise BadInput("--storage: an in-memory SQLite database cannot be shared or resumed; give a file path")
    try:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(url, f"cannot create the directory {Path(database).parent}", err.strerror) from err
    try:
        with sqlite3.connect(database, timeout=SQLITE_BUSY_TIMEOUT_S) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as err:  # not writable, or a file that is not an SQLite database
        raise storage_error(url, "cannot open it as an SQLite database", err) from err


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # the driver begins no transaction of its own: `_begin_immediate` does
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_study(url: str, settings: TuneSettings, pruner=None) -> optuna.Study:
    """Create the study or load it (`load_if_exists=True`), refusing a stored direction that differs."""
    study = optuna.create_study(
        storage=open_storage(url, settings),
        study_name=settings.study_name,
        direction=settings.direction,
        pruner=pruner,
        load_if_exists=True,
    )
    stored = study.direction.name.lower()
    if stored != settings.direction:
        raise BadInput(
            f"direction: study '{settings.study_name}' in {safe_url(url)} was created to {stored}; "
            f"use another study_name to {settings.direction}"
        )
    return study


USER_PASSWORD = re.compile(r"(?<=://)([^/@:]*):([^/@]*)@")  # user:password@ in a URL sqlalchemy cannot parse


def safe_url(url: str) -> str:
    """`url` with any password masked, for messages and summaries (also when the URL cannot be parsed)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return USER_PASSWORD.sub(r"\1:***@", url)


def passwords(url: str) -> set[str]:
    """The password of `url` as written and as decoded (empty when it has none)."""
    found = {match.group(2) for match in USER_PASSWORD.finditer(url)}
    with contextlib.suppress(sqlalchemy.exc.ArgumentError, ValueError):  # unparsable: the pattern found it
        found.add(make_url(url).password or "")
    return found - {""}


def storage_error(url: str, problem: str, cause) -> BadInput:
    """BadInput naming the masked `url`, the problem and its cause, with the password masked in the cause too."""
    detail = str(cause).strip()
    for password in passwords(url):
        detail = detail.replace(password, "***")
    return BadInput(f"storage '{safe_url(url)}': {problem} ({detail})")
