"""`xalign <command>`: one entry point; each command is a module with `main(argv) -> int`
(`pipeline.commands.*`, `encoding.commands.*`), imported only here.

Bad input (`BadInput`) prints `error: ...` and exits with code 2. A reader that closes the pipe early
(`xalign inspect DIR | head`) ends the command quietly with exit code 1, without a traceback.
`-q/--quiet` and `-v/--verbose`, anywhere before a `--`, set how much the `xalign` loggers say on stderr
(`pipeline.logs`) and are taken out before the command parses its arguments.
"""

import importlib
import os
import sys

from encoding.errors import BadInput
from pipeline.logs import HELP, configure_logging, take_verbosity

COMMANDS = {
    "demo": ("pipeline.commands.demo", "the main job on the embedded demo: encode, split, train, evaluate, plot"),
    "encode": ("encoding.commands.encode", "encode a dataset with frozen backbones into a cache"),
    "import": ("encoding.commands.import_embeddings", "store embeddings made elsewhere as a cache"),
    "inspect": ("encoding.commands.inspect", "summarise a cache and verify its shards"),
    "split": ("encoding.commands.split", "write or verify leakage-free image-level splits"),
    "train": ("pipeline.commands.train", "train a head pair from a YAML config"),
    "evaluate": ("pipeline.commands.evaluate", "retrieval metrics of a run or of a cache"),
    "tune": ("pipeline.commands.tune", "resumable Optuna sweep"),
    "backbone-train": ("pipeline.commands.backbone_train", "train an image backbone end to end"),
    "compare": ("pipeline.commands.compare", "one table of metrics across runs"),
    "index": ("pipeline.commands.index", "faiss indexes of a run's gallery, for search"),
    "search": ("pipeline.commands.search", "what a run retrieves for a text or an image"),
    "serve": ("pipeline.commands.serve", "a web page and JSON API to search a run"),
    "bench": ("pipeline.bench", "throughput against the limit and the naive loop"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return (
        f"usage: xalign <command> [-q | -v] [options]\n\ncommands:\n{rows}\n\n"
        f"`xalign <command> --help` for a command's options;\n{HELP}."
    )


def main(argv=None) -> int:
    argv, verbosity = take_verbosity(sys.argv[1:] if argv is None else list(argv))
    configure_logging(verbosity)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    try:
        code = module.main(rest)
        sys.stdout.flush()  # inside the try: a pipe closed early fails here, not at interpreter exit
        return code
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # argparse: --help exits 0, bad flags exit 2
        if exit_.code == 0:
            try:
                print(f"\n{HELP}", flush=True)  # below the command's own --help
            except BrokenPipeError:  # `xalign CMD --help | head`
                return closed_pipe()
        return exit_.code if isinstance(exit_.code, int) else 1
    except BrokenPipeError:
        return closed_pipe()


def closed_pipe() -> int:
    """Exit code 1 for a reader that closed stdout early. Python's recommended handling: point stdout at devnull
    so the flush at exit cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


if __name__ == "__main__":
    sys.exit(main())
