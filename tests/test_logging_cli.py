"""Library code reports through the `xalign` loggers; the CLI sends them to stderr, `-q` and `-v` on every command;
results stay on stdout; no library module prints."""

import ast
import logging
from pathlib import Path

import pytest

from encoding import cache
from encoding.checkpoint_hashes import verified_sha256
from encoding.commands import inspect as inspect_command
from pipeline import cli
from pipeline.logs import HELP, take_verbosity

ROOT = Path(__file__).resolve().parents[1]
# the CLI, commands and benchmarks print results; `pipeline/logs.py` is where log records are written
MAY_PRINT = ("pipeline/cli.py", "pipeline/logs.py", "pipeline/commands/", "encoding/commands/", "pipeline/bench/")
STREAMS = ("tqdm", "sys.stdout", "sys.stderr")  # whose `.write(...)` prints


def talk(argv) -> int:
    """A command that logs at every level and prints its result."""
    assert argv == ["DIR"]
    log = logging.getLogger("xalign.tests.talk")
    log.debug("detail")
    log.info("progress")
    log.warning("careful")
    print("result")
    return 0


@pytest.mark.parametrize(
    "argv,said",
    [
        (["inspect", "DIR"], ["progress", "warning: careful"]),
        (["-q", "inspect", "DIR"], ["warning: careful"]),
        (["inspect", "DIR", "--quiet"], ["warning: careful"]),
        (["inspect", "-v", "DIR"], ["debug: detail", "progress", "warning: careful"]),
        (["--verbose", "inspect", "DIR"], ["debug: detail", "progress", "warning: careful"]),
    ],
)
def test_quiet_and_verbose_set_what_stderr_shows_and_results_stay_on_stdout(argv, said, monkeypatch, capsys):
    monkeypatch.setattr(inspect_command, "main", talk)
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert out == "result\n"
    assert err.splitlines() == said


def test_the_flags_after_a_double_dash_are_the_commands_own():
    assert take_verbosity(["train", "-q", "c.yaml", "--", "-v"]) == (["train", "c.yaml", "--", "-v"], -1)
    assert take_verbosity(["train", "c.yaml", "-v", "--verbose"]) == (["train", "c.yaml"], 2)


def test_split_reports_on_stderr_and_quiet_hides_it(synthetic_cache, capsys):
    assert cli.main(["split", str(synthetic_cache), "--seed", "1", "--force"]) == 0
    out, err = capsys.readouterr()
    assert f"{synthetic_cache / cache.SPLITS}: random split, train " in err
    assert "note: replaced the split with fingerprint" in err and out == ""
    assert cli.main(["split", str(synthetic_cache), "--seed", "2", "--force", "-q"]) == 0
    assert capsys.readouterr() == ("", "")


def test_a_library_warning_goes_to_stderr_with_its_prefix_even_outside_the_cli(tmp_path, capsys):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    verified_sha256(checkpoint)
    out, err = capsys.readouterr()
    assert err.startswith(f"warning: {checkpoint}: no sha256 recorded in ") and out == ""


def test_usage_and_every_commands_help_name_the_flags(capsys):
    assert cli.main([]) == 0
    assert "[-q | -v]" in capsys.readouterr().out
    for command in cli.COMMANDS:
        argv = [command, "train", "--help"] if command == "bench" else [command, "--help"]
        assert cli.main(argv) == 0, command
        assert capsys.readouterr().out.rstrip().endswith(HELP), command


def printing_calls(path: Path) -> list[str]:
    """`print(...)`, `tqdm.write(...)` and `sys.stdout/stderr.write(...)` calls in the module at `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "print":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: print(")
        elif isinstance(func, ast.Attribute) and func.attr == "write" and ast.unparse(func.value) in STREAMS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(func)}(")
    return found


def test_no_library_module_prints():
    modules = sorted(p for package in ("pipeline", "encoding") for p in (ROOT / package).rglob("*.py"))
    library = [p for p in modules if not p.relative_to(ROOT).as_posix().startswith(MAY_PRINT)]
    assert len(library) > 20
    assert [call for path in library for call in printing_calls(path)] == []
