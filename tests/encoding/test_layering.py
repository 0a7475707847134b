"""Commands are thin and at the top: no module of `encoding` imports `encoding.commands`."""

import ast
from pathlib import Path

import encoding
from pipeline import cli

PACKAGE = Path(encoding.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` / `from ... import` in the file names (with `from X import Y`: X and X.Y)."""
    package = ["encoding", *path.relative_to(PACKAGE).parent.parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []  # relative: from its package
            module = ".".join([*base, *([node.module] if node.module else [])])
            names |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
    return names


def test_no_library_module_imports_a_command():
    library = [p for p in PACKAGE.rglob("*.py") if PACKAGE / "commands" not in p.parents]
    assert len(library) > 20
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imported_modules(p) if n.startswith("encoding.commands"))
        for p in library
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_cli_runs_the_command_modules():
    for name in ("encode", "split", "inspect"):
        assert cli.COMMANDS[name][0] == f"encoding.commands.{name}"
