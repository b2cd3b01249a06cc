"""Which process holds a job, and whether that process is gone.

A worker's id names its process: host, pid, the process's start time (the kernel's, in clock ticks since boot)
and a tag of the boot and pid namespace it runs in. At start-up, a worker gives the jobs of workers known to
be dead to the claims at once, instead of waiting for their leases to run out. "Known dead" is strict: the
holder ran on this boot, in this pid namespace (so its pid means here what it meant there), and no process
with its pid and start time exists now. Anything else (another host or container, a process that is only
paused, a system without /proc) could be alive: its jobs wait for their leases, which a live holder renews.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import uuid
from pathlib import Path

from storage import Store

log = logging.getLogger(__name__)

_UNKNOWN = "-"


def _started(pid: int) -> str | None:
    """A process's start time, in clock ticks since boot (field 22 of /proc/<pid>/stat); None if there is no
    such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # the fields after the command's name start at field 3


@functools.cache
def _namespace() -> str:
    """A tag of this boot and pid namespace: two processes that share it see the same pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pids = os.readlink("/proc/self/ns/pid")
    except OSError:
        return _UNKNOWN
    return hashlib.sha256(f"{boot} {pids}".encode()).hexdigest()[:8]


def new_worker_id() -> str:
    """host:pid:start:namespace:random (at most 64 characters, the column's width)."""
    pid = os.getpid()
    return (f"{socket.gethostname()[:20]}:{pid}:{_started(pid) or _UNKNOWN}:{_namespace()}:"
            f"{uuid.uuid4().hex[:8]}")


def known_dead(worker_id: str) -> bool:
    """Whether the process of this worker id is certainly gone (see the module's notes)."""
    parts = worker_id.rsplit(":", 4)
    if len(parts) != 5:
        return False
    _, pid, started, namespace, _ = parts
    if namespace == _UNKNOWN or namespace != _namespace() or started == _UNKNOWN or not pid.isdigit():
        return False
    return _started(int(pid)) != started  # no such process now, or another one that got its pid


async def free_jobs_of_dead_workers(store: Store) -> int:
    """Let the jobs of workers known to be dead be claimed now. Returns how many."""
    dead = [w for w in await store.leases.holders() if known_dead(w)]
    if not dead:
        return 0
    freed = await store.leases.expire(dead)
    log.info("taking %d unfinished job(s) of %d stopped worker(s) at once: %s", freed, len(dead), ", ".join(dead))
    return freed
