"""Chaos with real `python -m bot` processes: a replica paused past its lease and resumed, a second instance on
the same SQLite file, the database taken away while jobs upload and end, an instance killed and started again.
Every image is posted exactly once, and no one is told that a request failed when it completes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import re
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from storage import Store, open_store
from tests.conftest import POSTGRES_URL, SIGNING_SECRET, wait_until
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender
from tests.procs import BotProcess, free_port

API_KEY = "sk-once-0123456789abcdef"
# A job's end as the worker logs it, or its stopping on finding that another worker holds the job now.
_DEALT_WITH = re.compile(r"job (\d+) (?:done|failed)\b|job (\d+): another worker holds it")


@dataclasses.dataclass
class Instance:
    bot: BotProcess
    sender: SlackSender

    def dealt_with(self) -> set[int]:
        return {int(a or b) for a, b in _DEALT_WITH.findall(self.bot.log.read_text())}


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSlack, FakeOpenAI]]:
    async with FakeSlack() as slack, FakeOpenAI(api_key=API_KEY) as openai:
        yield slack, openai


@pytest.fixture
async def instances(fakes: tuple[FakeSlack, FakeOpenAI], tmp_path: Path) -> AsyncIterator[Callable[..., Instance]]:
    """Makes (unstarted) Easel instances against the fakes; stops them all at the end."""
    slack, openai = fakes
    made: list[Instance] = []

    def make(database_url: str, **extra: str) -> Instance:
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": openai.base_url,
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "SHUTDOWN_GRACE_SECONDS": "5",
            "LOG_LEVEL": "INFO",
            **extra,
        }
        made.append(Instance(BotProcess(env, tmp_path / f"easel-{len(made)}.log"),
                             SlackSender(url=f"http://127.0.0.1:{port}/slack/events", signing_secret=SIGNING_SECRET)))
        return made[-1]

    yield make
    for instance in made:
        await instance.sender.close()
        await instance.bot.ensure_stopped()


@dataclasses.dataclass
class Figures:
    threads: int
    images: int
    duplicates: int
    lost: int
    told_failed: int

    def __str__(self) -> str:
        return (f"threads={self.threads} images={self.images} duplicates={self.duplicates} lost={self.lost} "
                f"told_failed={self.told_failed}")


def figures(slack: FakeSlack, threads: list[tuple[str, str]]) -> Figures:
    per_thread = collections.Counter((f["channel_id"], f["thread_ts"]) for f in slack.shared_files)
    told = [m for channel, ts in threads for m in slack.thread(channel, ts) if ":warning:" in (m.get("text") or "")]
    warned = [key for key, names in slack.reactions.items() if "warning" in names]
    return Figures(threads=len(threads), images=len(slack.shared_files),
                   duplicates=sum(per_thread[t] - 1 for t in threads if per_thread[t] > 1),
                   lost=sum(per_thread[t] == 0 for t in threads), told_failed=len(told) + len(warned))


async def mentions(sender: SlackSender, n: int, prefix: str) -> list[tuple[str, str]]:
    threads = []
    for i in range(n):
        channel = f"C{prefix}{i:03d}"
        ts, result = await sender.mention(f"{prefix} picture {i}", channel=channel, user=f"U{prefix}{i:03d}")
        assert result.status == 200
        threads.append((channel, ts))
    return threads


async def unfinished(store: Store, n: int, *, timeout: float) -> int:
    """Wait until `n` jobs are stored and each is done or failed; how many were not, if that did not come in
    time."""
    async def left() -> int:
        jobs = await store.jobs.all()
        return n - sum(j.status in ("done", "failed") for j in jobs)

    async def none_left() -> bool:
        return await left() == 0

    with contextlib.suppress(AssertionError):
        await wait_until(none_left, timeout=timeout, what="every job to end")
    return await left()


def assert_exactly_once(result: Figures, label: str) -> None:
    print(f"\n{label}: {result}")
    assert (result.duplicates, result.lost, result.told_failed) == (0, 0, 0), str(result)
    assert result.images == result.threads


async def test_a_replica_paused_past_its_lease_posts_nothing_when_it_resumes(
    fakes: tuple[FakeSlack, FakeOpenAI], instances: Callable[..., Instance],
    pg_database: Callable[[], Awaitable[str]],
) -> None:
    """Replica A runs every job and is stopped (SIGSTOP, as a long pause would) past its lease; B takes the jobs
    over and posts them; A resumes with its answers streamed in meanwhile, and must post none of them."""
    slack, openai = fakes
    url = await pg_database()
    quick = {"JOB_LEASE_SECONDS": "2", "WORKER_POLL_SECONDS": "0.2"}
    a, b = instances(url, **quick), instances(url, **quick)
    n = 20
    await a.bot.start()
    openai.gate.clear()  # the generations run until the test lets them finish
    threads = await mentions(a.sender, n, "P")
    await openai.wait_for_creates(n, timeout=60)
    await b.bot.start()
    store = await open_store(url)
    paused = a.bot.worker_pid()
    os.kill(paused, signal.SIGSTOP)
    try:
        async def all_taken_over() -> bool:
            jobs = await store.jobs.all()
            return len(jobs) == n and all(j.status == "running" and j.attempts >= 2 for j in jobs)

        await wait_until(all_taken_over, timeout=60, what="B to take every job over")
        openai.gate.set()
        await wait_until(lambda: len({(f["channel_id"], f["thread_ts"]) for f in slack.shared_files}) == n,
                         timeout=60, what="B to post every image")
        job_ids = {j.id for j in await store.jobs.all()}
    finally:
        os.kill(paused, signal.SIGCONT)
    try:
        await wait_until(lambda: a.dealt_with() >= job_ids, timeout=60, what="A to deal with its old jobs")
        assert await unfinished(store, n, timeout=30) == 0
    finally:
        await store.close()
    assert await a.bot.terminate() == 0 and await b.bot.terminate() == 0
    assert_exactly_once(figures(slack, threads), "paused replica")


async def test_a_second_instance_on_the_same_sqlite_file_takes_no_live_job(
    fakes: tuple[FakeSlack, FakeOpenAI], instances: Callable[..., Instance], tmp_path: Path,
) -> None:
    """A rolling deploy: B starts on A's SQLite file while A runs every job. B must leave them to A."""
    slack, openai = fakes
    url = f"sqlite:///{tmp_path / 'easel.db'}"
    a, b = instances(url, WORKER_POLL_SECONDS="0.2"), instances(url, WORKER_POLL_SECONDS="0.2")
    n = 10
    await a.bot.start()
    openai.gate.clear()
    threads = await mentions(a.sender, n, "S")
    await openai.wait_for_creates(n, timeout=60)
    store = await open_store(url)
    try:
        await b.bot.start()

        async def all_running() -> bool:  # (B, starting, gave A's jobs back and took them, before the fix)
            jobs = await store.jobs.all()
            return len(jobs) == n and all(j.status == "running" for j in jobs)

        await wait_until(all_running, timeout=30, what="every job to be running")
        openai.gate.set()
        left = await unfinished(store, n, timeout=60)
        await wait_until(lambda: len(a.dealt_with()) >= n, timeout=30, what="A to end its jobs")
    finally:
        await store.close()
    assert await a.bot.terminate() == 0 and await b.bot.terminate() == 0
    assert_exactly_once(figures(slack, threads), "second instance on one SQLite file")
    assert left == 0 and b.dealt_with() == set()


class Outage:
    """Takes the database away from Easel, and gives it back: on PostgreSQL no connection is allowed and
    those open are ended; on SQLite another connection holds the file's write lock."""

    def __init__(self, url: str):
        self.url = url
        self._lock: sqlite3.Connection | None = None

    async def begin(self) -> None:
        if self.url.startswith("sqlite"):
            self._lock = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
            self._lock.execute("BEGIN EXCLUSIVE")
            return
        await self._admin(f'ALTER DATABASE "{self._name}" ALLOW_CONNECTIONS false',
                          f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self._name}'")

    async def end(self) -> None:
        if self._lock is not None:
            self._lock.rollback()
            self._lock.close()
            self._lock = None
        elif not self.url.startswith("sqlite"):
            await self._admin(f'ALTER DATABASE "{self._name}" ALLOW_CONNECTIONS true')

    @property
    def _name(self) -> str:
        return self.url.rsplit("/", 1)[1]

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql://", "postgres://"), timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()


# What each database says when it is away (the worker logs it, before and after the fix).
_AWAY = re.compile(r"database is locked|not currently accepting connections|terminating connection")


@pytest.mark.parametrize("moment", ["uploading", "ending"])
async def test_a_database_outage_loses_and_repeats_nothing(
    fakes: tuple[FakeSlack, FakeOpenAI], instances: Callable[..., Instance], database_url: str, moment: str,
) -> None:
    """The database goes away while the images are being uploaded (their file ids are being recorded), or as
    they are shared (the jobs' ends are recorded next). Nothing is lost, nothing is posted twice, no one is told
    of a failure, and the jobs end once the database is back."""
    slack, openai = fakes
    easel = instances(database_url, JOB_LEASE_SECONDS="60")
    n = 4
    await easel.bot.start()
    outage = Outage(database_url)
    try:
        gate = slack.gate("files.getUploadURLExternal" if moment == "uploading" else "files.completeUploadExternal")
        threads = await mentions(easel.sender, n, "D")
        await slack.wait_for("files.getUploadURLExternal" if moment == "uploading"
                             else "files.completeUploadExternal", count=n, timeout=60)
        await outage.begin()
        try:
            gate.set()
            await wait_until(lambda: _AWAY.search(easel.bot.log.read_text()), timeout=60,
                             what="the worker to find the database away")
        finally:
            await outage.end()
    finally:
        await outage.end()
    store = await open_store(database_url)  # (opened before, its connections would have been ended too)
    try:
        left = await unfinished(store, n, timeout=20)  # as soon as the database is back, not a lease later
    finally:
        await store.close()
    await asyncio.wait_for(easel.bot.terminate(), 60)
    print(f"\nunfinished 20 s after the database came back: {left}")
    assert_exactly_once(figures(slack, threads), f"database outage while {moment}")
    assert left == 0, "a job was left unfinished"


async def test_the_jobs_of_a_killed_instance_are_taken_at_once_when_it_starts_again(
    fakes: tuple[FakeSlack, FakeOpenAI], instances: Callable[..., Instance], database_url: str,
) -> None:
    """SIGKILL (the worker dies with its parent), then a new start: the new worker knows the old one is dead
    (same host, its process gone) and takes its jobs at once, not when their ten-minute leases run out."""
    slack, openai = fakes
    easel = instances(database_url, JOB_LEASE_SECONDS="600")
    n = 4
    await easel.bot.start()
    openai.gate.clear()
    threads = await mentions(easel.sender, n, "K")
    await openai.wait_for_creates(n, timeout=60)
    await easel.bot.kill()
    await easel.bot.start()
    openai.gate.set()
    await wait_until(lambda: len({(f["channel_id"], f["thread_ts"]) for f in slack.shared_files}) == n,
                     timeout=60, what="every image, well before the leases run out")
    assert await easel.bot.terminate() == 0
    assert_exactly_once(figures(slack, threads), "restart after SIGKILL")
    assert f"taking {n} unfinished job(s) of 1 stopped worker(s)" in easel.bot.log.read_text()


async def test_an_image_shared_before_a_kill_is_not_posted_again(
    fakes: tuple[FakeSlack, FakeOpenAI], instances: Callable[..., Instance], database_url: str,
) -> None:
    """SIGKILL once the image is in the thread, before the job's end is recorded. The next start resumes the job
    from its progress: the same response is collected again by its id, and the upload recorded before sharing
    is looked up in Slack, which has it: the image is not posted a second time, nor paid for again."""
    slack, openai = fakes
    easel = instances(database_url, JOB_LEASE_SECONDS="600", PREVIEW_IMAGES="0")
    await easel.bot.start()
    held = slack.hold_answer("files.completeUploadExternal")  # the share is made; its answer waits
    threads = await mentions(easel.sender, 1, "S")
    await wait_until(lambda: len(slack.shared_files) == 1, timeout=60, what="the image shared")
    await easel.bot.kill()
    held.set()
    await easel.bot.start()
    store = await open_store(database_url)
    try:
        assert await unfinished(store, 1, timeout=30) == 0
        [job] = await store.jobs.all()
    finally:
        await store.close()
    assert await easel.bot.terminate() == 0
    assert job.status == "done" and job.attempts == 2 and job.progress.uploads
    assert len(openai.create_requests()) == 1
    assert_exactly_once(figures(slack, threads), "restart after the image was shared")
