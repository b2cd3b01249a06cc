"""A clock for tests of anything paced: time moves only when the test moves it, so rates are exact and nothing
waits for real seconds."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class ManualClock:
    """`now()` is what the test set; `sleep(s)` returns once the test has moved the clock `s` seconds on."""

    def __init__(self, start: float = 1_000_000.0):
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._order), wake))
        try:
            await wake
        finally:
            wake.cancel()  # a cancelled sleeper is dropped at the next advance

    @property
    def sleeping(self) -> int:
        return sum(1 for *_, wake in self._sleepers if not wake.done())

    def next_wake(self) -> float | None:
        """When the earliest sleeper wakes."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def advance(self, seconds: float) -> None:
        self.advance_to(self._now + seconds)

    def advance_to(self, when: float) -> None:
        """Move to `when` (never back) and wake every sleeper due by then."""
        self._now = max(self._now, when)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            *_, wake = heapq.heappop(self._sleepers)
            if not wake.done():
                wake.set_result(None)
