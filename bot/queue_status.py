"""A generate job's status as its thread shows it while it waits: its place in the queue ("you're next", "number
3 in the queue"), which moves as the queue does, then "drawing now" when its turn comes; the message goes once
the answer is in.

The place is worked out here only: a waiting job starts with a free generation slot and a token from the
pacer (the OpenAI account's rate limit), so the jobs ahead of it that start now do not count. The slots and
the queue are the deployment's (every replica's running generations count against `MAX_CONCURRENT_GENERATIONS`),
and "ahead" is in the fair order the jobs are served in (`storage.fairness`). Whether queue
messages may be up anywhere (so that moving them is worth a look) is kept here too.
"""

from __future__ import annotations

import asyncio
import logging

from bot import messages
from bot.holding import Hold
from bot.pacing import Pacing
from bot.posts import Posts, noticed_before
from bot.slack import SlackAdapter
from storage import Store
from storage.models import Job, JobProgress

log = logging.getLogger(__name__)


def place(ahead: int, starting: int) -> int:
    """A waiting job's place: 1 for the next to start, 2 for the one after, ...; 0 or less if it starts now.
    `ahead`: the waiting jobs before it; `starting`: how many waiting jobs start right now."""
    return ahead + 1 - starting


class Slots:
    """This process's generation slots: taken by the jobs generating here and, for a moment, by each job
    being noticed here (it may start generating at once). The worker fills them; a new request asks whether
    one is free."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.generating = 0
        self.noticing = 0

    def free(self) -> int:
        return self.capacity - self.generating - self.noticing


class QueueStatus:
    def __init__(self, *, store: Store, slack: SlackAdapter, capacity: int, pacing: Pacing, slots: Slots,
                 posts: Posts):
        self._store = store
        self._slack = slack
        self._posts = posts
        self._capacity = capacity
        self._pacing = pacing
        self._slots = slots
        self._shown = False  # queue messages may be up (the last look found some, or one was posted here)
        # Set when the places shown may have moved: a request was placed (in fair order a newcomer can go ahead
        # of others waiting), a generation started or ended here. The worker then refreshes the messages.
        self.moved = asyncio.Event()

    @property
    def shown(self) -> bool:
        return self._shown

    def seen_shown(self) -> None:
        """A look at the database found queue messages up (another replica's, perhaps)."""
        self._shown = True

    def _starting(self, running: int) -> tuple[int, bool]:
        """How many waiting requests start right now (a free generation slot and a token from the pacer each),
        and whether it is the pacer that holds the others back."""
        slots, ready = max(0, self._capacity - running), self._pacing.ready()
        return min(slots, ready), ready < slots

    @staticmethod
    def _text(position: int, paced: bool) -> str:
        return messages.paced(position) if paced else messages.queued(position)

    async def say_queued(self, job: Job, hold: Hold, thread_ts: str | None) -> None:
        """When every generation slot of the deployment is taken, or the OpenAI account's rate limit holds
        requests back, say so, with the request's place in the queue. (The database is asked every time: other
        replicas' generations count against the cap as this process's do.)"""
        if job.queue_ts:
            return
        running, ahead = await hold.persist(
            lambda: self._store.queue.place(job.id, cap=self._capacity, ready=self._pacing.ready()))
        starting, paced = self._starting(running)
        position = place(ahead, starting)
        if position > 0:
            await hold.confirm()
            [ts, *_] = await self._posts.once(job, thread_ts, self._text(position, paced), what="queue",
                                              resumed=noticed_before(job))
            self._shown = True
            self.moved.set()
            await hold.update(queue_ts=ts, queue_pos=position)

    async def waits_again(self, job: Job, hold: Hold, progress: JobProgress) -> None:
        """The job met OpenAI's rate limit and waits for its turn again: its place is told, in the message that
        said it was its turn, or a new one, and recorded with the job's `progress`."""
        running, ahead = await hold.persist(lambda: self._store.queue.place(job.id))
        position = max(1, place(ahead, self._starting(running - 1)[0]))  # `running` counts this job
        text, ts = self._text(position, True), job.queue_ts
        await hold.confirm()
        try:
            if ts:
                await self._slack.update(job.channel_id, ts, text)
            else:
                [ts, *_] = await self._slack.post(job.channel_id, job.thread_ts, text)
            self._shown = True
        except Exception as e:  # noqa: BLE001 - the job waits all the same; its place is told when it moves
            log.warning("job %s: could not tell its place in the queue: %s", job.id, type(e).__name__)
        await hold.update(progress=progress, queue_ts=ts, queue_pos=position)

    async def drawing(self, job: Job) -> None:
        """Its turn came: a queue message up says so."""
        if job.queue_ts:
            await self._slack.update(job.channel_id, job.queue_ts, messages.QUEUE_DONE_WAITING)

    async def ended(self, job: Job) -> None:
        """The answer is in (or the job failed): a queue message up goes."""
        if job.queue_ts:
            await self._slack.delete(job.channel_id, job.queue_ts)

    async def refresh(self) -> None:
        """Move the queue messages along: each waiting request shows its current place."""
        running, waiting_ids, shown = await self._store.queue.messages()
        self._shown = bool(shown)
        starting, paced = self._starting(running)
        for job_id, channel, ts, shown_pos in shown:
            ahead = waiting_ids.index(job_id) if job_id in waiting_ids else None
            position = 1 if ahead is None else max(1, place(ahead, starting))
            if position != shown_pos and await self._store.queue.move_message(job_id, position):
                await self._slack.update(channel, ts, self._text(position, paced))
