"""The job runner: takes jobs from the database and runs them.

Two lanes claim work, each in a loop of its own: the noticer shows a sign of work on every new job at once
(its own small concurrency, never held up by generations), and the runner starts generations while a slot is
free (at most the generation slots' capacity at a time). The capacity is the deployment's: each claim that
starts generations takes only as many as the cap leaves beside those running in every replica (the database
counts them), so several workers never run more than `MAX_CONCURRENT_GENERATIONS` together. When a slot is
free already, the noticer starts a new job's generation itself, at the same time as its sign of work, instead
of handing it on. A heartbeat
renews the leases of the jobs this worker is working on, so another process can take over only the jobs of a
worker that died (or was paused past its lease: a run whose job was taken over meanwhile is stopped when the
heartbeat finds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.jobs import JobRunner
from bot.owners import new_worker_id
from bot.pacing import Paced, Pacing, Unpaced
from bot.queue_status import Slots
from storage import Store
from storage.models import Job, JobStatus

log = logging.getLogger(__name__)


class _Lane:
    """One kind of work this worker claims from the database: at most `capacity` jobs at a time, claimed in
    batches (one query each) while some of its slots are free, each run in a task of its own.

    `claim(limit)` claims up to `limit` jobs and returns them with the pacer's tokens it took for them (a
    generation starts with one) and the limit it claimed with; tokens not used by a job that went running are
    given back. `dispatch(jobs, limit)` starts their work. `first`, if given, is waited for before each claim."""

    def __init__(
        self,
        capacity: int,
        *,
        wake: asyncio.Event,
        claim: Callable[[int], Awaitable[tuple[list[Job], int, int]]],
        dispatch: Callable[[list[Job], int], None],
        pacing: Pacing,
        stopping: asyncio.Event,
        poll: float,
        first: Callable[[], Awaitable[None]] | None = None,
        batch: int = 32,
    ):
        self.capacity = capacity
        self.busy = 0
        self.freed = asyncio.Event()
        self.idle = asyncio.Event()  # set when its last job ends
        self.wake = wake
        self._claim, self._dispatch, self._first = claim, dispatch, first
        self._pacing, self._stopping, self._poll, self._batch = pacing, stopping, poll, batch

    @property
    def free(self) -> int:
        return self.capacity - self.busy

    def began(self) -> None:
        self.busy += 1
        self.idle.clear()

    def ended(self) -> None:
        self.busy -= 1
        self.freed.set()
        if self.busy == 0:
            self.idle.set()

    async def loop(self) -> None:
        """Claim as many jobs as there are free slots (in one query), and start each."""
        while not self._stopping.is_set():
            if self._first is not None:
                await self._first()
            if self.free <= 0:
                self.freed.clear()
                await wait_at_most(self.freed, self._poll)
                continue
            self.wake.clear()
            try:
                jobs, tokens, limit = await self._claim(min(self.free, self._batch))
            except Exception:
                log.exception("claiming jobs failed; retrying")
                await wait_at_most(self.wake, self._poll)
                continue
            await self._pacing.give_back(tokens - sum(1 for job in jobs if job.status is JobStatus.RUNNING))
            self._dispatch(jobs, limit)
            if len(jobs) < limit:
                # Nothing more was there to take. More comes with a wake-up: a request stored, a sign of work
                # up, a job done whose thread has a next one, or `_look_around` finding work no one told of.
                await self.wake.wait()


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        runner: JobRunner,
        slots: Slots,
        lease: float = 60.0,
        poll: float = 10.0,
        notice_concurrency: int = 16,
        worker_id: str | None = None,
        pacing: Pacing | None = None,
    ):
        self._store = store
        self._runner = runner
        self._queue = runner.queue
        self._slots = slots  # this process's generation slots, as the runner's queue status reads them too
        self._pacing: Pacing = pacing or Unpaced()  # a generation starts with a token from it (the account's limit)
        self._lease = lease
        self._poll = poll
        self.worker_id = worker_id or new_worker_id()
        self._stopping = asyncio.Event()
        lane = {"pacing": self._pacing, "stopping": self._stopping, "poll": poll}
        # The noticer: a sign of work on every new job at once (starting its generation too when a slot is free).
        self._notices = _Lane(notice_concurrency, wake=asyncio.Event(), claim=self._claim_new,
                              dispatch=self._start_noticed, **lane)
        # The runner: queued generations while a slot is free, signs of work first.
        self._generations = _Lane(slots.capacity, wake=asyncio.Event(), claim=self._claim_queued,
                                  dispatch=self._start_queued, first=self._notices_first, **lane)
        self._more_queued = False  # the runner's last claim took as many as it asked for: more may wait
        self._notices_done = 0  # signs of work put up here so far
        self._notices_at_start: dict[asyncio.Task[bool | None], int] = {}  # of each running job, when it began
        self._queue_moved = self._queue.moved  # places moved: the queue messages are refreshed
        self._tasks: dict[asyncio.Task[bool | None], Job] = {}
        self.counts = {"noticed": 0, "ran": 0}  # jobs taken by this worker, for logs and tests
        self._loops: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        """New jobs were stored (by this process): look now instead of at the next poll. (A new job goes to
        the noticer first; the runner hears of it from there.)"""
        self._notices.wake.set()

    @property
    def busy(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._notices.loop(), name="easel-noticer"),
            asyncio.create_task(self._generations.loop(), name="easel-runner"),
            asyncio.create_task(self._heartbeat(), name="easel-heartbeat"),
            asyncio.create_task(self._queue_messages(), name="easel-queue"),
            asyncio.create_task(self._queue.progress.run(self._stopping), name="easel-progress"),
            asyncio.create_task(self._runner.cleanup.run(self._stopping), name="easel-cleanup"),
            asyncio.create_task(self._look_around(), name="easel-poll"),
        ]

    async def stop(self, grace: float) -> None:
        """Take no new work; give running jobs `grace` seconds; hand the rest back for the next start."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.wake()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            log.info("waiting up to %.0f s for %d running job(s)", grace, len(self._tasks))
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            unfinished = [self._tasks[task] for task in pending if task in self._tasks]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for job in unfinished:
                with contextlib.suppress(Exception):
                    await self._store.leases.release(job.id, worker_id=self.worker_id, lease_no=job.lease_no)
                log.info("job %s handed back unfinished", job.id)
        await self._runner.cleanup.drain(min(grace, 5.0))  # what the jobs that ended left up in Slack

    async def _notices_first(self) -> None:
        """Signs of work first: a burst of requests should all see the hourglass before the CPU goes to starting
        generations (never for long: a notice is one Slack call and a write)."""
        if self._notices.busy:
            await self._wait(self._notices.idle)

    async def _claim_new(self, limit: int) -> tuple[list[Job], int, int]:
        # A lone request starts generating at once, beside its sign of work. In a burst (the noticer is busy)
        # signs of work go first, and generations start behind them: starting hundreds of them means database
        # writes, and on SQLite those would make new requests wait for the write lock. Each generation starts
        # with a token from the pacer (OpenAI's image limit): the noticer starts them only with tokens at hand.
        quiet = self._notices.busy == 0 and self._generations.free >= limit
        tokens = 0
        if quiet:
            tokens = await self._pacing.try_take(limit)
            quiet, limit = tokens > 0, tokens or limit
        try:
            jobs = await self._store.leases.claim_new_batch(worker_id=self.worker_id, lease=self._lease, limit=limit,
                                                            start=quiet, cap=self._slots.capacity)
        except Exception:
            await self._pacing.give_back(tokens)
            raise
        return jobs, tokens, limit

    def _start_noticed(self, jobs: list[Job], limit: int) -> None:
        for job in jobs:
            if job.status is JobStatus.RUNNING:  # a slot was free: it generates at once
                self._launch(self._generations, job, self._run_with_sign(job))
            else:
                self._launch(self._notices, job, self._notice(job))

    async def _claim_queued(self, limit: int) -> tuple[list[Job], int, int]:
        # The runner waits for the pacer's tokens and claims as many jobs as it got.
        tokens = limit = await self._pacing.take(limit)
        try:
            jobs = await self._store.leases.claim_batch(worker_id=self.worker_id, lease=self._lease, limit=limit,
                                                        cap=self._slots.capacity)
        except Exception:
            await self._pacing.give_back(tokens)
            raise
        return jobs, tokens, limit

    def _start_queued(self, jobs: list[Job], limit: int) -> None:
        self._more_queued = len(jobs) == limit
        for job in jobs:
            self._launch(self._generations, job, self._run(job))

    def _launch(self, lane: _Lane | None, job: Job, work: Awaitable[bool | None]) -> None:
        """Run `work` for `job` in a task of its own, in a slot of `lane` (None: in no slot, as a message's
        attachments are fetched after its notice)."""
        if lane is self._generations:
            self._queue_moved.set()  # a waiting job started: the places behind it moved
        if lane is not None:
            lane.began()
            self._count_slots()
        task = asyncio.ensure_future(work)
        task.set_name(f"easel-job-{job.id}")
        self._tasks[task] = job
        if lane is self._generations:
            self._notices_at_start[task] = self._notices_done
        task.add_done_callback(lambda t: self._done(t, lane))

    def _count_slots(self) -> None:
        """The generation slots as the queue status reads them: every job being noticed may want one."""
        self._slots.generating, self._slots.noticing = self._generations.busy, self._notices.busy

    def _done(self, task: asyncio.Task[bool | None], lane: _Lane | None) -> None:
        self._tasks.pop(task, None)
        if lane is not None:
            lane.ended()
            self._count_slots()
        crashed = not task.cancelled() and task.exception() is not None
        if crashed:
            log.error("job task crashed", exc_info=task.exception())
        if lane is self._generations:
            self._queue_moved.set()
            # A slot is free: worth a look if queued jobs were left behind, if this thread's next job waits, or
            # if a job was noticed here meanwhile (its claim may have come just before this job's end).
            noticed_meanwhile = self._notices_done > self._notices_at_start.pop(task, 0)
            if self._more_queued or noticed_meanwhile or crashed or (not task.cancelled() and task.result()):
                self._generations.wake.set()
        else:
            self._generations.wake.set()  # the job it noticed may run now

    async def _wait(self, event: asyncio.Event) -> None:
        """Wait for `event`, or at most one poll interval (a safety net: each of these events is set when
        its wait is over, and work that no one told this worker of is found by `_look_around`)."""
        await wait_at_most(event, self._poll)

    async def _look_around(self) -> None:
        """Every poll interval, one query for work that no one told this worker of (another replica's jobs,
        jobs whose process died, queue messages another replica put up); the loops it concerns are woken.
        Idle, a worker makes this one read per interval and nothing else."""
        while not self._stopping.is_set():
            await wait_at_most(self._stopping, self._poll)
            if self._stopping.is_set():
                return
            try:
                new, runnable, queue_shown = await self._store.leases.work_waiting()
            except Exception:
                log.exception("looking for work failed")
                continue
            if new:
                self._notices.wake.set()
            if runnable:
                self._generations.wake.set()
            if queue_shown:
                self._queue.seen_shown()
                self._queue_moved.set()

    async def _notice(self, job: Job) -> None:
        self.counts["noticed"] += 1
        try:
            rest = await self._runner.notice(job)
            if rest is not None:  # its attachments: fetched in a task of its own, holding up no slot
                self._launch(None, job, rest)
        except Exception:
            log.exception("job %s: showing a sign of work failed", job.id)
            await self._runner.notice_failed(job)
        self._notices_done += 1
        self._generations.wake.set()

    async def _run(self, job: Job) -> bool:
        self.counts["ran"] += 1
        return await self._handed_back_if_paced(job, self._runner.run(job))

    async def _run_with_sign(self, job: Job) -> bool:
        self.counts["noticed"] += 1
        self.counts["ran"] += 1
        sign = asyncio.create_task(self._runner.sign(job))
        return await self._handed_back_if_paced(job, self._runner.run(job, sign=sign))

    async def _handed_back_if_paced(self, job: Job, run: Awaitable[bool]) -> bool:
        """A job that met OpenAI's rate limit goes back to the queue, where its id keeps its place; the runner
        takes it again when the pacer allows."""
        try:
            return await run
        except Paced:
            await self._store.leases.release(job.id, worker_id=self.worker_id, lease_no=job.lease_no)
            log.info("job %s waits for its turn again (OpenAI's rate limit)", job.id)
            return True

    async def _queue_messages(self, *, at_most_every: float = 1.5) -> None:
        """Update "number N in the queue" messages when jobs finish (and every poll interval while any are up,
        for other replicas' jobs), but not more often than Slack's chat.update limit suits."""
        while not self._stopping.is_set():
            await self._queue_moved.wait()  # a job finished here, or `_look_around` saw messages up
            self._queue_moved.clear()
            if not self._queue.shown:
                continue  # a job finished, but no queue message is up to move
            try:
                await self._queue.refresh()
            except Exception:
                log.exception("updating queue positions failed")
            await asyncio.sleep(at_most_every)

    async def _heartbeat(self) -> None:
        while not self._stopping.is_set():
            await wait_at_most(self._stopping, self._lease / 3)
            if not self._tasks:
                continue  # nothing held here (a claim sets its own lease): an idle worker writes nothing
            working = dict(self._tasks)
            try:
                numbers = await self._store.leases.renew(worker_id=self.worker_id,
                                                         job_ids={j.id for j in working.values()}, lease=self._lease)
            except Exception:
                log.exception("renewing job leases failed")
                continue
            for task, job in working.items():
                now = numbers.get(job.id, job.lease_no)
                # A generation whose job was claimed again since (this worker was paused past its lease, or cut
                # off from the database) is another run's now: this one stops without a word. (A notice task
                # outlives its lease for a moment as its job goes on to be run: it ends on its own.)
                if now != job.lease_no and task in self._notices_at_start and not task.done():
                    log.info("job %s: another worker holds it now (lease %d, not %d); stopping here", job.id, now,
                             job.lease_no)
                    task.cancel()


async def wait_at_most(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set, or `seconds` have passed.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives just as the event is set,
    and a worker being stopped then went on waiting for work, holding up the stop for good."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
