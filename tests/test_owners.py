"""Telling whether the process holding a job is gone (bot.owners), and freeing a dead worker's jobs."""

from __future__ import annotations

import asyncio
import os
import sys

from bot import owners
from storage import Store
from tests.test_store import new_job, queued


def _id_of(pid: int, *, namespace: str | None = None) -> str:
    started = owners._started(pid)
    assert started is not None
    return f"host:{pid}:{started}:{namespace or owners._namespace()}:abcdef12"


async def test_a_worker_id_names_its_process_and_fits_the_column() -> None:
    worker_id = owners.new_worker_id()
    assert len(worker_id) <= 64
    _, pid, started, namespace, _ = worker_id.rsplit(":", 4)
    assert int(pid) == os.getpid() and started == owners._started(os.getpid()) and namespace != "-"
    assert not owners.known_dead(worker_id)  # this process (another worker in it, say) is alive
    assert owners.new_worker_id() != worker_id


async def test_a_process_is_known_dead_only_when_it_certainly_is() -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "input()", stdin=asyncio.subprocess.PIPE)
    try:
        alive = _id_of(child.pid)
        assert not owners.known_dead(alive)
        stopped = _id_of(child.pid).replace(":abcdef12", ":00000000")
        os.kill(child.pid, 19)  # SIGSTOP: a paused process is alive
        assert not owners.known_dead(stopped)
        os.kill(child.pid, 18)
    finally:
        child.kill()
        await child.wait()
    assert owners.known_dead(alive)  # no such process any more
    pid, started = alive.split(":")[1:3]
    assert owners.known_dead(f"host:{os.getpid()}:{started}:{owners._namespace()}:ab")  # pid reused
    # another boot or pid namespace (another host, another container), or an id of another shape: not known
    assert not owners.known_dead(f"host:{pid}:{started}:0badf00d:abcdef12")
    assert not owners.known_dead("vm:123:-:-:abcdef12")
    assert not owners.known_dead("an-older-worker:4242:1a2b3c4d")
    assert not owners.known_dead("")


async def test_the_jobs_of_dead_workers_are_freed_and_no_others(store: Store) -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()
    dead = f"host:{child.pid}:1:{owners._namespace()}:deadbeef"  # (no process of that pid started then)
    alive = owners.new_worker_id()
    elsewhere = "other-host:1:1:0badf00d:abcdef12"
    jobs = {}
    for name, worker in (("dead", dead), ("alive", alive), ("elsewhere", elsewhere)):
        await queued(store, new_job(thread_ts=f"{len(jobs) + 1}.0"))
        jobs[name] = await store.leases.claim(worker_id=worker, lease=600)
    assert await owners.free_jobs_of_dead_workers(store) == 1
    again = await store.leases.claim(worker_id="next", lease=60)
    assert again is not None and again.id == jobs["dead"].id
    assert await store.leases.claim(worker_id="next", lease=60) is None
    assert await owners.free_jobs_of_dead_workers(store) == 0
