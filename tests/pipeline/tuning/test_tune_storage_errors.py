"""A storage `xalign tune` cannot use is bad input (exit 2) naming the URL with its password masked; the password
appears nowhere in the output, and no traceback is printed."""

import pytest
from tune_support import write_optuna_config

from pipeline import cli
from pipeline.tuning.storage import safe_url

SECRET = "s3cret"


def _urls(tmp_path) -> dict[str, tuple[str, str]]:
    """{case: (url, what the message says)}."""
    (tmp_path / "a_file").write_text("a regular file, so no directory can be made under it")
    (tmp_path / "garbage.db").write_bytes(b"\x00this is not an SQLite database" * 64)
    return {
        "unreachable": (f"postgresql+psycopg2://user:{SECRET}@127.0.0.1:1/db", "cannot open the database"),
        "unknown scheme": (f"foo://user:{SECRET}@host/db", "unknown database scheme"),
        "no driver or no server": (f"mysql://user:{SECRET}@127.0.0.1:1/db", "storage 'mysql://user:***@"),
        "unparsable": (f"postgresql://user:{SECRET}@host:notaport/db", "not a database URL"),
        "unwritable": (f"sqlite:///{tmp_path / 'a_file' / 'x.db'}", "cannot create the directory"),
        "not a database": (f"sqlite:///{tmp_path / 'garbage.db'}", "cannot open it as an SQLite database"),
    }


@pytest.mark.parametrize(
    "case", ["unreachable", "unknown scheme", "no driver or no server", "unparsable", "unwritable", "not a database"]
)
def test_an_unusable_storage_is_bad_input_without_its_password(tmp_path, capsys, case):
    url, said = _urls(tmp_path)[case]
    config = write_optuna_config(tmp_path / "tune.yaml", tmp_path)
    assert cli.main(["tune", str(config), "--storage", url]) == 2
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert err.startswith(f"error: storage '{safe_url(url)}': ") and said in err
    assert "Traceback" not in err


def test_safe_url_masks_the_password_of_any_url():
    assert safe_url(f"postgresql://user:{SECRET}@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert safe_url(f"postgresql://user:{SECRET}@host:notaport/db") == "postgresql://user:***@host:notaport/db"
    assert safe_url("sqlite:///results/optuna/x.db") == "sqlite:///results/optuna/x.db"
