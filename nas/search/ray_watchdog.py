"""Binds the lifetime of a local Ray this search started to the search's own process.

`ray.shutdown()` stops Ray's head processes (gcs_server, raylet, monitor, agents) when the driver ends normally or on
Ctrl-C, but after `kill -9` of the driver they ran on (about 200 MB) until the next search. `bind_to_driver` starts
this module as a small separate process that keeps track of those processes and their descendants (the raylet's
dashboard and runtime-env agents and workers, which outlive the raylet), waits for the driver to disappear, and then
ends them all (SIGTERM, then SIGKILL after a grace period). A process is known by its id and start time, so an id
the system has since given to another process is never signalled. Run as
`python -m edgetpu_models.nas.search.ray_watchdog DRIVER_PID PID...`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

POLL_S = 1.0
GRACE_S = 5.0


def ray_head_pids(ray: Any) -> list[int]:
    """Process ids of the head processes of the Ray this process started (empty when they cannot be found)."""
    try:
        node = ray._private.worker._global_node  # Ray has no public API for its own process ids
        return sorted({p.process.pid for procs in node.all_processes.values() for p in procs if p.process})
    except AttributeError:
        return []


def bind_to_driver(ray: Any) -> subprocess.Popen | None:
    """Starts the watchdog for the Ray this process started; None when its processes cannot be found."""
    pids = ray_head_pids(ray)
    if not pids:
        return None
    return subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid()), *map(str, pids)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # not in the driver's group: a Ctrl-C there must not end it


Proc = tuple[int, str]
"""A process: its id and its start time (field 22 of /proc/PID/stat)."""


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent id, start time) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[1]), fields[19]) if len(fields) > 19 else None


def _alive(proc: Proc) -> bool:
    stat = _stat(proc[0])
    return stat is not None and stat[1] == proc[1]


def _descendants(roots: set[Proc]) -> set[Proc]:
    """`roots` (those still alive) and every live process below them."""
    children: dict[int, list[Proc]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                children.setdefault(stat[0], []).append((int(name), stat[1]))
    found = {r for r in roots if _alive(r)}
    todo = list(found)
    while todo:
        for child in children.get(todo.pop()[0], []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _end(procs: set[Proc]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if _alive(proc):
                try:
                    os.kill(proc[0], sig)
                except OSError:
                    pass
        deadline = time.monotonic() + GRACE_S
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(p) for p in procs):
            time.sleep(0.2)


def watch(driver: int, pids: Sequence[int]) -> None:
    """Tracks `pids` and their descendants while the driver lives (our parent changes when it dies: it started us),
    then ends every one still running. Returns at once when they have all ended (a normal `ray.shutdown()`)."""
    parent = os.getppid()
    known = {(p, stat[1]) for p in pids if (stat := _stat(p)) is not None}
    while os.getppid() == parent and _stat(driver) is not None:
        known = _descendants(known)
        if not known:
            return
        time.sleep(POLL_S)
    _end(_descendants(known))


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(a) for a in sys.argv[2:]])
