"""A job as the worker running it holds it: its writes fenced on the lease its claim took, and a check of the
lease before anything Slack shows.

`LeaseLost` from any of them means another worker has the job now (this one was paused, or cut off, past its
lease): the run stops there, quietly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from storage import Store
from storage.models import Job

log = logging.getLogger(__name__)

T = TypeVar("T")


class Hold:
    def __init__(self, store: Store, job: Job, *, lease: float):
        self._store, self._job, self._lease = store, job, lease

    async def update(self, **values: Any) -> None:
        """Record progress (`Store.update_job`)."""
        job = self._job
        await self.persist(lambda: self._store.update_job(job.id, lease_no=job.lease_no, **values))

    async def noticed(self, **values: Any) -> None:
        job = self._job
        await self.persist(lambda: self._store.noticed(job.id, lease_no=job.lease_no, **values))

    async def finish(self, **values: Any) -> bool:
        job = self._job
        return await self.persist(lambda: self._store.finish(job.id, lease_no=job.lease_no, **values))

    async def confirm(self) -> None:
        """Right before something Slack shows (a post, an upload's completion): the job must still be this
        worker's, and its lease is extended for the time that takes. Raises LeaseLost otherwise."""
        job = self._job
        await self.persist(lambda: self._store.hold(job.id, lease_no=job.lease_no, lease=self._lease))

    async def persist(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` (a Store call about this job)."""
        return await call()
