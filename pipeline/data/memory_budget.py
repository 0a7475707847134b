"""Whether a split's inputs are held in memory or streamed from the shards (`data.stream`).

With `data.stream: null` a split is streamed when its inputs take more than `MEMORY_SHARE` of the
memory this process may use: the smaller of the machine's available memory (`MemAvailable`) and the
room left under the cgroup memory limit when one is set, shared by the processes torchrun starts on
this machine (`LOCAL_WORLD_SIZE`). The choice and its reason are logged (a streamed split at INFO, one
held in memory at DEBUG: the usual case stays quiet); runs record it in run_info.json.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

MEMORY_SHARE = 0.5  # a split's inputs are held in memory when they take at most this share of the budget
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_FILES = {"v2": ("memory.max", "memory.current"), "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes")}
log = logging.getLogger(f"xalign.{__name__}")


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (the whole physical memory where that is not readable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cgroup_dirs(proc_cgroup: str, root: Path = CGROUP_ROOT) -> list[tuple[Path, str]]:
    """(directory, version) of this process's memory cgroup and each of its parents up to the mount root, from
    /proc/self/cgroup's text (v2 `0::/path`, v1 `N:memory:/path`)."""
    dirs = []
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        mount, version = (root, "v2") if controllers == "" else (root / "memory", "v1")
        if version == "v1" and "memory" not in controllers.split(","):
            continue
        parts = [p for p in path.split("/") if p]
        dirs += [(mount.joinpath(*parts[:depth]), version) for depth in range(len(parts), -1, -1)]
    return dirs


def cgroup_room_bytes(dirs: list[tuple[Path, str]] | None = None) -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroup and its parents, or None when none is
    set (or readable)."""
    if dirs is None:
        try:
            dirs = cgroup_dirs(Path("/proc/self/cgroup").read_text())
        except OSError:
            return None
    rooms = []
    for directory, version in dirs:
        limit_file, usage_file = CGROUP_FILES[version]
        try:
            limit, usage = (directory / limit_file).read_text().strip(), int((directory / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit != "max" and int(limit) < 1 << 60:  # v2 'max', v1's page-rounded 2**63: no limit
            rooms.append(max(0, int(limit) - usage))
    return min(rooms) if rooms else None


@dataclass(frozen=True)
class MemoryBudget:
    """The bytes one process may fill with a split's inputs, and how they were worked out."""

    bytes: float
    reason: str


def memory_budget(available: int | None = None, cgroup_room: int | None = None, processes: int | None = None):
    """`MEMORY_SHARE` × min(available memory, cgroup room) / local processes (each read here when not given)."""
    available = available_memory_bytes() if available is None else available
    cgroup_room = cgroup_room_bytes() if cgroup_room is None else cgroup_room
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if processes is None else processes
    usable, parts = available, [f"MemAvailable {available / 2**30:.1f} GiB"]
    if cgroup_room is not None:
        usable = min(usable, cgroup_room)
        parts.append(f"cgroup room {cgroup_room / 2**30:.1f} GiB")
    budget = MEMORY_SHARE * usable / max(1, processes)
    reason = f"{MEMORY_SHARE} x min({', '.join(parts)}) / {processes} local process{'es' * (processes > 1)}"
    return MemoryBudget(budget, reason)


def choose_stream(what: str, nbytes: float, stream: bool | None, budget: MemoryBudget | None = None) -> bool:
    """Whether `what` (`nbytes` of inputs) is streamed: as `stream` says, else when it exceeds the budget."""
    if stream is not None:
        log.log(
            logging.INFO if stream else logging.DEBUG,
            f"{what}: {'streamed from the shards' if stream else 'in memory'} (data.stream: {str(stream).lower()})",
        )
        return stream
    budget = memory_budget() if budget is None else budget
    stream = nbytes > budget.bytes
    log.log(
        logging.INFO if stream else logging.DEBUG,
        f"{what}: {nbytes / 2**30:.2f} GiB {'over' if stream else 'within'} the budget of {budget.bytes / 2**30:.2f} "
        f"GiB ({budget.reason}): {'streamed from the shards' if stream else 'in memory'}",
    )
    return stream
