"""A generate job's status message, the one its thread shows while it waits and draws: its place in the queue
("you're next", "number 3 in the queue"), which moves as the queue does, then, when its turn comes, "drawing"
with the time so far, the time left and previews (`bot.progress`); the message goes once the answer is in.
A job that starts at once gets its status message when it starts. Posting it is a sign of work (it goes
without when the workspace's Slack budget has none to spare: the reaction is the sign then); moving it is
cosmetic (skipped without a token, and tried again when the places move next).

The place is worked out here only: a waiting job starts with a free generation slot and a token from the
pacer (the OpenAI account's rate limit), so the jobs ahead of it that start now do not count. The slots and
the queue are the deployment's (every replica's running generations count against `MAX_CONCURRENT_GENERATIONS`),
and "ahead" is in the fair order the jobs are served in (`storage.fairness`). Whether queue
messages may be up anywhere (so that moving them is worth a look) is kept here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot import messages
from bot.holding import Hold
from bot.pacing import Pacing
from bot.posts import Posts, noticed_before, ran_before
from bot.progress import Drawing, Progress
from bot.slack import SlackAdapter
from bot.slack_budget import Priority
from storage import Store
from storage.models import Job, JobProgress

log = logging.getLogger(__name__)

Step = Callable[[bool], Awaitable[bool]]  # one thing to take down from Slack (see `QueueStatus.take_down`)


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
                 posts: Posts, progress: Progress):
        self._store = store
        self.progress = progress
        self._slack = slack
        self._posts = posts
        self._capacity = capacity
        self._pacing = pacing
        self._slots = slots
        self._shown = False  # queue messages may be up (the last look found some, or one was posted here)
        self._posted = 0  # queue messages posted here so far (a look that began before one was recorded is stale)
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

    async def say_queued(self, job: Job, hold: Hold, thread_ts: str | None, *, reacted: bool = True) -> None:
        """When every generation slot of the deployment is taken, or the OpenAI account's rate limit holds
        requests back, say so, with the request's place in the queue. (The database is asked every time: other
        replicas' generations count against the cap as this process's do.) Without a reaction (the workspace's
        budget for them was spent: a burst), the status message is the sign of work, so it is posted now in any
        case."""
        if job.queue_ts:
            return
        running, ahead = await hold.persist(
            lambda: self._store.queue.place(job.id, cap=self._capacity, ready=self._pacing.ready()))
        starting, paced = self._starting(running)
        position = place(ahead, starting)
        if position > 0 or not reacted:
            await hold.confirm()
            text = self._text(position, paced) if position > 0 else messages.STARTING
            stamps = await self._posts.once(job, thread_ts, text, what="queue",
                                            resumed=noticed_before(job), priority=Priority.SIGN)
            if not stamps:
                return  # no budget left for it in the workspace: the reaction says it is in hand
            await hold.update(queue_ts=stamps[0], queue_pos=max(position, 1))
            self._posted += 1
            self._shown = True
            self.moved.set()

    async def waits_again(self, job: Job, hold: Hold, progress: JobProgress, *, ts: str | None = None) -> None:
        """The job met OpenAI's rate limit and waits for its turn again: its place is told, in the message that
        said it was its turn, or a new one, and recorded with the job's `progress`."""
        running, ahead = await hold.persist(lambda: self._store.queue.place(job.id))
        position = max(1, place(ahead, self._starting(running - 1)[0]))  # `running` counts this job
        text, ts = self._text(position, True), job.queue_ts or ts
        await hold.confirm()
        try:
            if ts:  # (news the person needs, not a cosmetic move: a sign's priority)
                await self._slack.update(job.channel_id, ts, text, priority=Priority.SIGN)
            else:
                ts = next(iter(await self._slack.post(job.channel_id, job.thread_ts, text, priority=Priority.SIGN)),
                          None)
            self._shown = self._shown or ts is not None
        except Exception as e:  # noqa: BLE001 - the job waits all the same; its place is told when it moves
            log.warning("job %s: could not tell its place in the queue: %s", job.id, type(e).__name__)
        await hold.update(progress=progress, queue_ts=ts, queue_pos=position)

    async def drawing(self, job: Job, hold: Hold, tool: dict[str, object], *, thinking: bool = False) -> Drawing | None:
        """Its turn came: the status message says so (posted now if the job had none), and shows the progress
        from now on (`thinking`: "working on it" until the image begins). None if there is no status message
        (no budget was left for one)."""
        ts = job.queue_ts
        if not ts:
            await hold.confirm()
            stamps = await self._posts.once(job, job.thread_ts, messages.QUEUE_DONE_WAITING, what="queue",
                                            resumed=ran_before(job), priority=Priority.SIGN)
            if not stamps:
                return None
            ts = stamps[0]
            await hold.update(queue_ts=ts)
        return await self.progress.begin(job_id=job.id, team_id=job.team_id, channel=job.channel_id, ts=ts,
                                         tool=tool, thinking=thinking)

    def take_down(self, job: Job, drawing: Drawing | None, previews: tuple[str, ...]) -> list[Step]:
        """What to take down once the answer is in (or the job failed), in order: the status message, then the
        previews it showed. Each step is `step(wait)`, False if it was not done (with `wait=False`: no token
        for it now)."""
        ts = drawing.ts if drawing is not None else job.queue_ts
        steps: list[Step] = []
        if ts:
            steps.append(lambda wait: self._slack.delete(job.channel_id, ts, wait=wait))
        for file_id in dict.fromkeys((*previews, *(drawing.previews if drawing else ()))):
            steps.append(lambda wait, file_id=file_id: self._slack.delete_file(file_id, wait=wait))
        return steps

    async def refresh(self) -> None:
        """Move the queue messages along: each waiting request shows its current place."""
        posted = self._posted
        running, waiting_ids, shown = await self._store.queue.messages()
        self._shown = bool(shown) or posted != self._posted
        starting, paced = self._starting(running)
        for job_id, channel, ts, shown_pos, team in shown:
            ahead = waiting_ids.index(job_id) if job_id in waiting_ids else None
            position = 1 if ahead is None else max(1, place(ahead, starting))
            if position == shown_pos:
                continue
            # Recorded only once shown (a move that found no budget is tried again when the places next move).
            try:
                await self._slack.use_team(team)  # its workspace's token and budgets
            except Exception as e:  # noqa: BLE001 - (uninstalled meanwhile: its job ends on its own)
                log.info("job %s: no token to move its queue message: %s", job_id, type(e).__name__)
                continue
            moved = await self._slack.update(channel, ts, self._text(position, paced))
            if moved:
                await self._store.queue.move_message(job_id, position)
