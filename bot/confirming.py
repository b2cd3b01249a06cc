"""The Slack side of budgets: a click on "Draw it, up to $x", `/imagine usage` and `/imagine settings tz`.

A confirmation is a job that ended asking (its progress names the message with the button); its requester's
click stores a copy of the request marked confirmed (`JobOptions.confirmed_from`), keyed by the asking job, so
that two clicks (or a click and Slack's retry) start one request. Nothing else is stored: a restart between the
question and the click changes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable

import sqlalchemy as sa

from bot.admins import Admins
from bot.budgets import Budgets
from bot.slack import NotInstalled, SlackAdapter
from storage import DuplicateJob, Store, TooManyPending
from storage.models import JobKind, NewJob

log = logging.getLogger(__name__)


class Confirmed(enum.Enum):
    ACCEPTED = "accepted"
    NOT_YOURS = "not_yours"
    ALREADY = "already"  # clicked before: the request is on its way
    UNKNOWN = "unknown"  # no such question (forgotten by retention, or another workspace's)
    TOO_MANY = "too_many"


@dataclasses.dataclass(frozen=True)
class Click:
    outcome: Confirmed
    requester: str | None = None


class BudgetDesk:
    def __init__(self, *, store: Store, budgets: Budgets, admins: Admins, slack: SlackAdapter,
                 wake: Callable[[], None], max_pending: int):
        self._store = store
        self._budgets = budgets
        self._admins = admins
        self._slack = slack
        self._wake = wake
        self._max_pending = max_pending

    async def confirm(self, *, team_id: str, user_id: str, value: str) -> Click:
        if not value.isdigit():
            return Click(Confirmed.UNKNOWN)
        try:
            job = await self._store.jobs.get(int(value))
        except sa.exc.NoResultFound:
            return Click(Confirmed.UNKNOWN)
        if job.team_id != team_id or job.progress.confirm_ts is None or job.kind is not JobKind.GENERATE:
            return Click(Confirmed.UNKNOWN)
        if job.user_id != user_id:
            return Click(Confirmed.NOT_YOURS, job.user_id)
        root = job.thread_ts
        copy = NewJob(
            dedupe_key=f"confirm:{job.id}",
            kind=JobKind.GENERATE,
            # a slash command's thread exists by now: the copy runs in it like a reply to its first message
            source="reply" if job.source == "command" else job.source,
            team_id=job.team_id, channel_id=job.channel_id, user_id=job.user_id, text=job.text,
            message_ts=job.message_ts or root, thread_ts=root,
            options=dataclasses.replace(job.options, confirmed_from=job.id),
            files=job.files, force_image=job.force_image, response_url=job.response_url)
        try:
            copy_id = await self._store.jobs.enqueue(copy, max_pending=self._max_pending)
        except DuplicateJob:
            return Click(Confirmed.ALREADY, job.user_id)
        except TooManyPending:
            return Click(Confirmed.TOO_MANY, job.user_id)
        log.info("job %s confirmed by %s: job %s draws it", job.id, user_id, copy_id)
        self._wake()
        return Click(Confirmed.ACCEPTED, job.user_id)

    async def is_admin(self, team_id: str, user_id: str) -> bool:
        try:
            await self._slack.use_team(team_id)
        except NotInstalled:
            return False
        return await self._admins.is_admin(team_id, user_id)

    async def usage(self, *, team_id: str, channel_id: str, user_id: str) -> str:
        admin = await self.is_admin(team_id, user_id)
        return await self._budgets.usage(team_id=team_id, channel_id=channel_id, user_id=user_id, admin=admin)

    async def settings(self, *, team_id: str, user_id: str, args: str) -> str:
        """`/imagine settings tz <zone>` (admins): the workspace's time zone for days and months."""
        words = args.split()
        if len(words) != 2 or words[0].lower() not in ("tz", "timezone"):
            zone = (await self._budgets.periods(team_id)).zone
            return (f"Days and months are counted in {zone}. An admin changes that with "
                    "`/imagine settings tz Europe/Paris` (or `UTC`).")
        if not await self.is_admin(team_id, user_id):
            return ":lock: Only Easel's admins (the workspace's admins and owners, and EASEL_ADMINS) change this."
        return await self._budgets.set_time_zone(team_id=team_id, zone=words[1], by=user_id)
