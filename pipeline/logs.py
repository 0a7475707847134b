"""Where the `xalign.*` loggers write when a command runs, and how much: `-q/--quiet`, `-v/--verbose`.

Library modules report through `logging.getLogger(f"xalign.{__name__}")` and never print; commands print
their results and tables on stdout. `configure_logging` (called by `pipeline.cli` once per command) writes
the records to stderr: WARNING as `warning: MESSAGE`, ERROR and above as `error: MESSAGE`, INFO as the bare
message, DEBUG as `debug: MESSAGE`. Quiet keeps warnings and errors only; verbose adds debug records.
"""

import logging
import sys

from tqdm import tqdm

ROOT = "xalign"
FLAGS = {"-q": -1, "--quiet": -1, "-v": 1, "--verbose": 1}
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
PREFIXES = {"DEBUG": "debug: ", "WARNING": "warning: ", "ERROR": "error: ", "CRITICAL": "error: "}
HELP = "every command also takes -q/--quiet (warnings and errors only) and -v/--verbose (debug messages too)"


def take_verbosity(argv: list[str]) -> tuple[list[str], int]:
    """`argv` without the -q/--quiet/-v/--verbose before any `--`, and their sum (each -q -1, each -v +1)."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [arg for arg in argv[:end] if arg not in FLAGS]
    return kept + argv[end:], sum(FLAGS.get(arg, 0) for arg in argv[:end])


class StderrHandler(logging.Handler):
    """Writes each record to `sys.stderr` as it is when the record comes (so a redirection made later sees it),
    through `tqdm.write`, which lifts a progress bar drawn there and redraws it below the line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class PrefixFormatter(logging.Formatter):
    """The message, after `warning: `, `error: ` or `debug: ` by the record's level (nothing for INFO)."""

    def format(self, record: logging.LogRecord) -> str:
        return PREFIXES.get(record.levelname, "") + super().format(record)


def configure_logging(verbosity: int = 0) -> None:
    """Send the `xalign` loggers to a `StderrHandler` at the level `verbosity` asks for (<= -1 quiet, 0 INFO,
    >= 1 DEBUG), replacing the one an earlier call installed; their records no longer reach the root logger."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, StderrHandler)]:
        logger.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(PrefixFormatter())
    logger.addHandler(handler)
    logger.setLevel(LEVELS[max(-1, min(1, verbosity))])
    logger.propagate = False
