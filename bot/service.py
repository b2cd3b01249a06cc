"""Intake: the one door through which Slack requests become stored jobs."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
from collections.abc import Callable
from typing import Any

from bot import messages
from storage import DuplicateJob, Store, TooManyPending
from storage.models import JobKind, NewJob, Thread

log = logging.getLogger(__name__)


class Submitted(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # a Slack retry, or the second event for one message
    TOO_MANY = "too_many"  # the user's pending-request cap was reached


class Intake:
    """Stores requests as jobs (before Slack is acknowledged) and wakes the worker."""

    def __init__(self, *, store: Store, wake: Callable[[], None], max_pending_per_user: int):
        self._store = store
        self._wake = wake
        self.cap = max_pending_per_user

    async def thread(self, *, team_id: str, channel_id: str, thread_ts: str) -> Thread | None:
        return await self._store.thread(team_id=team_id, channel_id=channel_id, thread_ts=thread_ts)

    async def submit(
        self, job: NewJob, *, start_thread: bool = False, thread_options: dict[str, Any] | None = None
    ) -> Submitted:
        outcome = Submitted.ACCEPTED
        try:
            try:
                job_id = await self._store.enqueue(job, start_thread=start_thread, thread_options=thread_options,
                                                   max_pending=self.cap)
            except TooManyPending:
                if job.source == "command":
                    return Submitted.TOO_MANY
                outcome = Submitted.TOO_MANY
                job_id = await self._refuse(job)
        except DuplicateJob:
            log.info("duplicate delivery ignored: %s", job.dedupe_key)
            return Submitted.DUPLICATE
        log.info("job %s accepted: %s %s from %s", job_id, job.kind.value, job.source, job.user_id)
        self._wake()
        return outcome

    async def _refuse(self, job: NewJob) -> int:
        """A message over the person's cap: a reaction on it (its own key, so Slack's retries stay one), and,
        for the first of a burst only, one message saying why. A burst is everything refused while the cap
        stays reached: the person's newest accepted request names it."""
        job_id = await self._store.enqueue(dataclasses.replace(job, kind=JobKind.REACTION,
                                                               text=messages.REFUSED_REACTION))
        burst = await self._store.newest_request(team_id=job.team_id, user_id=job.user_id)
        with contextlib.suppress(DuplicateJob):  # raised when this burst was told already
            await self._store.enqueue(dataclasses.replace(
                job, kind=JobKind.NOTICE, text=messages.too_many_pending_burst(self.cap),
                dedupe_key=f"cap:{job.team_id}:{job.user_id}:{burst}"))
        return job_id
