"""A job as the worker running it holds it: its writes fenced on the lease its claim took, made again while
the database is away, and a check of the lease before anything Slack shows.

`LeaseLost` from any of them means another worker has the job now (this one was paused, or cut off, past its
lease): the run stops there, quietly. A database that is away is waited for: the progress and the end of a
job are recorded once it is back, never given up on (a run that gave up would leave its job to be taken again
only when its lease runs out, and would tell the user of a failure for a job that still completes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from storage import Store, unavailable
from storage.models import Job

log = logging.getLogger(__name__)

T = TypeVar("T")


class Hold:
    def __init__(self, store: Store, job: Job, *, lease: float, first_retry: float = 0.2, last_retry: float = 2.0):
        self._store, self._job, self._lease = store, job, lease
        self._first_retry, self._last_retry = first_retry, last_retry

    async def update(self, **values: Any) -> None:
        """Record progress (`Store.update_job`)."""
        job = self._job
        await self.persist(lambda: self._store.jobs.update(job.id, lease_no=job.lease_no, **values))

    async def noticed(self, **values: Any) -> None:
        job = self._job
        await self.persist(lambda: self._store.jobs.noticed(job.id, lease_no=job.lease_no, **values))

    async def finish(self, **values: Any) -> bool:
        job = self._job
        return await self.persist(lambda: self._store.jobs.finish(job.id, lease_no=job.lease_no, **values))

    async def confirm(self) -> None:
        """Right before something Slack shows (a post, an upload's completion): the job must still be this
        worker's, and its lease is extended for the time that takes. Raises LeaseLost otherwise."""
        job = self._job
        await self.persist(lambda: self._store.leases.hold(job.id, lease_no=job.lease_no, lease=self._lease))

    async def persist(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` (a Store call about this job), made again for as long as the database is away."""
        delay, attempt = self._first_retry, 0
        while True:
            try:
                return await call()
            except Exception as e:
                if not unavailable(e):
                    raise
                attempt += 1
                if attempt == 1 or attempt % 30 == 0:
                    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                    log.warning("job %s: the database is unavailable (%s); trying again until it is back",
                                self._job.id, reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._last_retry)
