"""Intake: the one door through which Slack requests become stored jobs."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot import messages
from bot.lifecycle import Lifecycle
from bot.metrics import Metrics
from bot.policy import Policy
from storage import DuplicateJob, Store, TooManyPending
from storage.models import JobKind, NewJob, Thread
from storage.retention import Retention
from storage.settings import Settings

log = logging.getLogger(__name__)


class Submitted(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # a Slack retry, or the second event for one message
    TOO_MANY = "too_many"  # the user's pending-request cap was reached


class Intake:
    """Stores requests as jobs (before Slack is acknowledged) and wakes the worker."""

    def __init__(
        self,
        *,
        store: Store,
        wake: Callable[[], None],
        max_pending_per_user: int,
        metrics: Metrics,
        lifecycle: Lifecycle | None = None,
        forget_workspace: Callable[[str], Awaitable[None]] | None = None,
        purge_on_uninstall: bool = False,
        settings: Settings | None = None,
    ):
        """`forget_workspace(team_id)` removes a workspace's installation (OAuth installs; None with one token)."""
        self._store = store
        self._wake = wake
        self.cap = max_pending_per_user
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._forget_workspace = forget_workspace
        self._purge_on_uninstall = purge_on_uninstall
        self._settings = settings

    async def models(self) -> None:
        """Bring the model table up to date with what the worker learned from OpenAI (read from the database
        every few minutes, so options are resolved against today's line-up)."""
        if self._lifecycle is not None:
            await self._lifecycle.read()

    async def workspace_removed(self, team_id: str) -> None:
        """The workspace uninstalled Easel or revoked its token: forget the installation, cancel its waiting
        jobs (nothing more is posted there), and delete its data now or after the retention period."""
        if self._forget_workspace is not None:
            await self._forget_workspace(team_id)
        cancelled = await Retention(self._store.db).workspace_removed(team_id, now=time.time(),
                                                                   purge=self._purge_on_uninstall)
        log.info("workspace %s removed Easel: %d waiting job(s) cancelled, its data %s", team_id, cancelled,
                 "deleted" if self._purge_on_uninstall else "to be deleted after the retention period")

    async def thread(self, *, team_id: str, channel_id: str, thread_ts: str) -> Thread | None:
        return await self._store.threads.get(team_id=team_id, channel_id=channel_id, thread_ts=thread_ts)

    async def policy(self, *, team_id: str, channel_id: str) -> Policy:
        """The channel's settings in force (the workspace's under the channel's)."""
        if self._settings is None:
            return Policy()
        return Policy((await self._settings.place(team_id, channel_id)).effective)

    async def submit(
        self, job: NewJob, *, start_thread: bool = False, thread_options: dict[str, Any] | None = None
    ) -> Submitted:
        outcome = await self._submit(job, start_thread=start_thread, thread_options=thread_options)
        kind = "notice" if job.kind is JobKind.NOTICE and outcome is Submitted.ACCEPTED else outcome.value
        self._metrics.requests.labels(job.source, kind).inc()
        return outcome

    async def _submit(
        self, job: NewJob, *, start_thread: bool, thread_options: dict[str, Any] | None
    ) -> Submitted:
        outcome = Submitted.ACCEPTED
        try:
            try:
                job_id = await self._store.jobs.enqueue(job, start_thread=start_thread, thread_options=thread_options,
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
        job_id = await self._store.jobs.enqueue(dataclasses.replace(job, kind=JobKind.REACTION,
                                                               text=messages.REFUSED_REACTION))
        burst = await self._store.jobs.newest_request(team_id=job.team_id, user_id=job.user_id)
        with contextlib.suppress(DuplicateJob):  # raised when this burst was told already
            await self._store.jobs.enqueue(dataclasses.replace(
                job, kind=JobKind.NOTICE, text=messages.too_many_pending_burst(self.cap),
                dedupe_key=f"cap:{job.team_id}:{job.user_id}:{burst}"))
        return job_id
