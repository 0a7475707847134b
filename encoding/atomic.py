"""Atomic file writes: readers see the old file or the complete new one, never a partial file.

The data goes to a temporary file in the target's directory (same file system), which is renamed
onto the target with `os.replace` only once it is complete; on an exception it is removed.
"""

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; renamed onto `path` only if the block succeeds.

    For writers that take a file name (`torch.save`, `h5py.File`):

    >>> with atomic_target(run / "best.pt") as tmp:
    ...     torch.save(state, tmp)
    """
    path = Path(path)
    # A fresh name, not created here: the writer creates the file, so the umask sets its mode.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` (str as UTF-8, or bytes) to `path` atomically."""
    with atomic_target(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
