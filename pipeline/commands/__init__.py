"""One module per `xalign` verb (`main(argv) -> int`): argument parsing and printing only.

Nothing imports these modules but `pipeline.cli`; the work is done by the library they call.
"""

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from encoding.errors import BadInput
from pipeline.training.loop import NonFiniteLoss


def training_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The arguments every training verb takes: CONFIG, --set, --resume, --overwrite, --no-verify."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from results/<name>/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip hashing the cache's shards")
    return p


@contextmanager
def naming_config(path: Path) -> Iterator[None]:
    """A run that diverges (`NonFiniteLoss`) is reported against the config file whose settings to change."""
    try:
        yield
    except NonFiniteLoss as err:
        raise BadInput(f"{path}: {err}") from err
