"""Stage 1 of a job: a visible sign of work within a second of the request (a reaction, a slash command's
thread, the place in the queue), and the jobs that are only that (a notice, a reaction, `@Easel forget`).
A message's attachments are fetched here too, before the job may take a generation slot."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable

from bot import messages
from bot.admins import Admins
from bot.holding import Hold
from bot.inputs import InputRefused, Inputs
from bot.posts import Posts, noticed_before
from bot.queue_status import QueueStatus
from bot.slack import CannotPost, NotInstalled, SlackAdapter
from bot.usergroups import UserGroups
from storage import LeaseLost, Store
from storage.models import Job, JobKind, JobStatus
from storage.retention import Retention

log = logging.getLogger(__name__)


class Noticer:
    def __init__(self, *, store: Store, slack: SlackAdapter, attachments: Inputs, admins: Admins,
                 queue: QueueStatus, posts: Posts, lease: float, usergroups: UserGroups | None = None):
        """`usergroups`: who is in the user group a channel may be open to (None: no channel is)."""
        self._store = store
        self._usergroups = usergroups
        self._slack = slack
        self._posts = posts
        self._attachments = attachments
        self._admins = admins
        self._queue = queue
        self._lease = lease

    def _hold(self, job: Job) -> Hold:
        return Hold(self._store, job, lease=self._lease)

    async def notice(self, job: Job) -> Awaitable[None] | None:
        """The sign of work. For a message with attachments, returns the rest (downloading and checking them,
        then the place in the queue): the worker runs it beside its noticer, in no slot of its own."""
        hold = self._hold(job)
        try:
            try:
                await self._slack.use_team(job.team_id)
            except NotInstalled:
                await hold.finish(status=JobStatus.FAILED, error="the workspace uninstalled Easel")
                return None
            return await self._notice(job, hold)
        except LeaseLost:
            log.info("job %s: another worker holds it now; stopping here", job.id)
            return None

    async def _notice(self, job: Job, hold: Hold) -> Awaitable[None] | None:
        if job.kind is JobKind.FORGET:
            text = await self._forget(job, hold)
            await hold.confirm()
            await self._posts.once(job, job.thread_ts, text, what="forget", resumed=noticed_before(job))
            await hold.finish(status=JobStatus.DONE)
            return None
        if job.kind is JobKind.NOTICE:
            await hold.confirm()
            await self._posts.once(job, job.thread_ts, job.text, what="notice", resumed=noticed_before(job))
            await hold.finish(status=JobStatus.DONE)
            return None
        if job.kind is JobKind.REACTION:
            await hold.confirm()
            await self._slack.react(job.channel_id, job.message_ts or "", job.text)
            await hold.finish(status=JobStatus.DONE)
            return None
        if self._usergroups is not None and (refusal := await self._usergroups.refusal(job)) is not None:
            await self._refuse(job, hold, refusal)
            return None
        if job.source != "command":
            reacted = await self._slack.react(job.channel_id, job.message_ts or "")
            if job.files:
                return self._fetch_inputs(job, hold)
            await self._queue.say_queued(job, hold, job.thread_ts, reacted=reacted)
            await hold.noticed()
            return None
        root_ts = job.progress.root_ts
        if not root_ts:
            text = messages.command_root(user_id=job.user_id, prompt=job.text, resolved=job.options.shown or {})
            await hold.confirm()
            try:
                [root_ts, *_] = await self._posts.once(job, None, text, what="root", resumed=noticed_before(job))
            except CannotPost:
                if job.response_url:
                    await self._slack.respond(job.response_url, messages.CANNOT_POST)
                await hold.finish(status=JobStatus.FAILED, error="cannot post in channel")
                return None
            await hold.update(progress=dataclasses.replace(job.progress, root_ts=root_ts))
        reacted = await self._slack.react(job.channel_id, root_ts)
        await self._queue.say_queued(job, hold, root_ts, reacted=reacted)
        await hold.noticed(thread_ts=root_ts, thread_options=job.options.sticky or {})
        return None

    async def _refuse(self, job: Job, hold: Hold, text: str) -> None:
        """The person is not among those the channel's policy admits (its user group's members): told privately
        for a slash command, a button or the Edit modal, in the thread for a message. Nothing was reserved,
        downloaded or sent to OpenAI, and nothing is."""
        await hold.confirm()
        if job.response_url:
            await self._slack.respond(job.response_url, text)
        elif job.source == "edit":
            await self._slack.ephemeral(job.channel_id, job.user_id, text, thread_ts=job.thread_ts)
        else:
            await self._posts.once(job, job.thread_ts, text, what="refusal", resumed=noticed_before(job))
        log.info("job %s: %s is not admitted by the channel's user group", job.id, job.user_id)
        await hold.finish(status=JobStatus.FAILED, error="policy: the channel's user group")

    async def _fetch_inputs(self, job: Job, hold: Hold) -> None:
        """A message's attachments, downloaded and checked before the job may run, so that a slow or refused
        one never holds a generation slot. A refusal ends the job here, said in the thread."""
        try:
            await self._fetch_and_queue(job, hold)
        except LeaseLost:
            log.info("job %s: another worker holds it now; stopping here", job.id)

    async def _fetch_and_queue(self, job: Job, hold: Hold) -> None:
        try:
            await self._slack.use_team(job.team_id)  # a task of its own: its calls need the workspace's token too
        except NotInstalled:
            await hold.finish(status=JobStatus.FAILED, error="the workspace uninstalled Easel")
            return
        try:
            await self._attachments.fetch(job)
        except Exception as e:
            if isinstance(e, InputRefused):
                text, error = e.message, f"download: {e}"
            else:
                log.exception("job %s: fetching its attachments failed unexpectedly", job.id)
                text, error = messages.INTERNAL, f"internal: {type(e).__name__}: {e}"
            await hold.confirm()
            try:
                await self._posts.once(job, job.thread_ts, text, what="refusal", resumed=noticed_before(job))
            except Exception as told:  # noqa: BLE001 - the job ends all the same
                log.warning("could not tell job %s's thread why: %s", job.id, type(told).__name__)
            await self._slack.unreact(job.channel_id, job.message_ts or "")
            await self._slack.react(job.channel_id, job.message_ts or "", messages.FAILED_REACTION)
            await hold.finish(status=JobStatus.FAILED, error=error)
            return
        await self._queue.say_queued(job, hold, job.thread_ts)
        await hold.noticed()

    async def _forget(self, job: Job, hold: Hold) -> str:
        """`@Easel forget`: the thread's chain and records go, if the person started the thread or is an admin."""
        assert job.thread_ts is not None
        where = {"team_id": job.team_id, "channel_id": job.channel_id, "thread_ts": job.thread_ts}
        thread = await hold.persist(lambda: self._store.threads.get(**where))
        if thread is None:
            return messages.NOTHING_TO_FORGET
        if job.user_id != thread.started_by and not await self._admins.is_admin(job.team_id, job.user_id):
            return messages.forget_not_yours(thread.started_by)
        await hold.persist(lambda: Retention(self._store.db).forget_thread(**where))
        log.info("job %s: thread %s forgotten at %s's request", job.id, job.thread_ts, job.user_id)
        return messages.FORGOTTEN

    async def sign(self, job: Job) -> None:
        """Only the sign of work, for a message job that starts generating at once (best effort)."""
        try:
            await self._slack.use_team(job.team_id)
            await self._slack.react(job.channel_id, job.message_ts or "")
        except Exception as e:  # noqa: BLE001 - the generation goes on without its hourglass
            log.warning("job %s: no sign of work (%s)", job.id, type(e).__name__)

    async def notice_failed(self, job: Job) -> None:
        """Slack failed us while showing the sign of work (after its retries). A generate job in an existing
        thread still runs (the sign is only a courtesy); a text-only notice, or a command whose thread could
        not be started, ends here, with a private word to the user where that is possible."""
        hold = self._hold(job)
        try:
            if job.kind is JobKind.GENERATE and job.source != "command":
                await hold.noticed()
                return
            if job.response_url:
                await hold.confirm()
                await self._slack.respond(job.response_url, messages.SLACK_POST_FAILED)
            await hold.finish(status=JobStatus.FAILED, error="slack: the first message failed")
        except LeaseLost:
            log.info("job %s: another worker holds it now; stopping here", job.id)
