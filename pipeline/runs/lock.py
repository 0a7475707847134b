"""The write lock of a run directory: one process at a time writes `results/<name>/`.

The writer holds an exclusive `flock` on `results/<name>/.lock` (non-blocking) and writes its pid in
the file. The kernel drops the lock when its holder exits, however it dies, so a lock file that a
killed process left behind is simply taken over: only the lock state counts, never the file's
existence. The file itself is never deleted (unlinking it would let two processes lock two different
files).
"""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from encoding.errors import BadInput

LOCK_FILE = ".lock"


def holder_pid(fd: int) -> str:
    """The pid written in an open lock file, or 'unknown' (a holder that has not written it yet)."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return text if text.isdigit() else "unknown"


def open_lock_file(run_dir: Path) -> int:
    """A descriptor of `run_dir/.lock`, creating the directory and the file when missing."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise BadInput(f"{run_dir}: cannot create the run directory's lock file ({err.strerror})") from err


def acquire(fd: int, run_dir: Path) -> None:
    """Lock the open lock file of `run_dir` and write this process's pid in it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BadInput(
            f"{run_dir}: another process (pid {holder_pid(fd)}) is writing this run; wait for it or use another name"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold the write lock of `run_dir` (created when missing) for the block; BadInput naming the holder's
    pid when another process has it."""
    run_dir = Path(run_dir)
    fd = open_lock_file(run_dir)
    try:
        acquire(fd, run_dir)
        try:
            yield run_dir
        finally:
            os.ftruncate(fd, 0)  # no stale pid is left behind
    finally:
        os.close(fd)  # closing the descriptor releases the lock
