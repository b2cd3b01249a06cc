"""Taking down what a finished job left up in Slack (its status message, the previews it showed, the reaction
that was its sign of work) when the workspace's budget had no token for it as the job ended: after the job's
end, at the pace Slack's limits allow.

`reactions.remove` is a Tier 2 method (20 calls a minute per workspace): after a burst, the signs of work come
down over minutes. Waiting for them in the job would hold its generation slot that long, so they wait here
instead, in a bounded queue (what does not fit is dropped, with a warning), a few at a time. What is still
queued when the process stops (or dies) stays up in Slack.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_WAITING = 10_000  # cleanups queued at most; each is a few strings
AT_ONCE = 8  # cleanups under way at once (each may wait for its workspace's budget)


class Cleanup:
    def __init__(self, *, use_team: Callable[[str], Awaitable[None]], limit: int = MAX_WAITING,
                 at_once: int = AT_ONCE):
        self._use_team = use_team  # makes this task's Slack calls with the workspace's token (and budgets)
        self._waiting: collections.deque[tuple[str, Callable[[], Awaitable[object]]]] = collections.deque()
        self._limit = limit
        self._at_once = at_once
        self._more = asyncio.Event()
        self.dropped = 0

    def later(self, team_id: str, work: Callable[[], Awaitable[object]]) -> None:
        """Queue `work` (Slack calls for `team_id`'s workspace, at CLEANUP priority)."""
        if len(self._waiting) >= self._limit:
            self.dropped += 1
            log.warning("cleanup queue full (%d): a finished job's status and sign of work stay up", self._limit)
            return
        self._waiting.append((team_id, work))
        self._more.set()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _one(self, team_id: str, work: Callable[[], Awaitable[object]]) -> None:
        try:
            await self._use_team(team_id)  # (each runs in a task of its own: the context is its own)
            await work()
        except Exception as e:  # noqa: BLE001 - a message left up is not worth more than a line
            log.warning("cleanup in %s failed: %s", team_id, type(e).__name__)

    async def run(self, stopping: asyncio.Event) -> None:
        """Work through the queue, `at_once` at a time, until `stopping` (or cancelled)."""
        slots = asyncio.Semaphore(self._at_once)
        running: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

        try:
            while not stopping.is_set():
                if not self._waiting:
                    self._more.clear()
                    more, stop = asyncio.ensure_future(self._more.wait()), asyncio.ensure_future(stopping.wait())
                    await asyncio.wait({more, stop}, return_when=asyncio.FIRST_COMPLETED)
                    more.cancel()
                    stop.cancel()
                    continue
                await slots.acquire()
                task = asyncio.create_task(self._one(*self._waiting.popleft()))
                running.add(task)
                task.add_done_callback(done)
        finally:
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def drain(self, seconds: float) -> None:
        """At a stop: what is queued, for up to `seconds` (what is left then stays up in Slack)."""
        if not self._waiting or seconds <= 0:
            return
        work = [asyncio.create_task(self._one(*self._waiting.popleft())) for _ in range(len(self._waiting))]
        _, pending = await asyncio.wait(work, timeout=seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.info("%d finished job(s) keep their status message or sign of work up (stopping)", len(pending))
