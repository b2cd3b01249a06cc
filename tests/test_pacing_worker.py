"""Easel against an OpenAI account with an image limit (the fake's): the worker paces its requests to it,
learns it when it is not configured, and tells every waiting request its place. The pacer and the fake's
limit share a clock that the test moves only when Easel is waiting for its pacer and nothing it sent is
still on its way, so every figure is exact."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from bot import assembly as easel_app
from bot import web as easel_web
from bot.jobs import MAX_PACED
from bot.pacing import BUCKET
from storage.limits import Limits
from tests.clock import ManualClock
from tests.conftest import SIGNING_SECRET, Running, settings_for, stop_easel, wait_until
from tests.fakes.openai_api import FakeOpenAI, Fault
from tests.fakes.openai_limits import AccountLimits
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender

PLACE = re.compile(r"rate limit; (you're next|you're number (\d+) in the queue)")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def paced(
    fake_slack: FakeSlack, database_url: str, clock: ManualClock
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """`await paced(AccountLimits(...), **env)`: Easel on the pacer's `clock`, against a fake OpenAI account
    with those limits (on the same clock)."""
    started: list[tuple[Running, web.AppRunner, FakeOpenAI]] = []

    async def start(limits: AccountLimits | None = None, *, account: FakeOpenAI | None = None, **env: str) -> Running:
        fake = account
        if fake is None:
            assert limits is not None
            limits.clock = clock.now
            fake = FakeOpenAI(limits=limits)
            await fake.start()
        easel = await easel_app.build(settings_for(fake_slack, fake, database_url, **env), clock=clock)
        runner = web.AppRunner(easel_web.web_app(easel))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        easel.worker.start()
        sender = SlackSender(url=url + easel_web.EVENTS_PATH, signing_secret=SIGNING_SECRET,
                             team_id=fake_slack.team_id, bot_user_id=fake_slack.bot_user_id)
        running = Running(easel=easel, slack=fake_slack, openai=fake, sender=sender, url=url)
        started.append((running, runner, fake))
        return running

    yield start
    for running, runner, fake in started:
        await stop_easel(running, runner)
        await fake.close()  # (closing a fake twice is harmless)


async def _drive(easel: Running, clock: ManualClock, n: int, timeout: float = 60.0) -> None:
    """Until all `n` jobs are finished: whenever the worker waits for its pacer, every token it took has become
    a request to OpenAI, and every job it started has had its answer (a response id, or back in the queue after
    a 429), move the clock to when the pacer wakes."""

    async def step() -> bool:
        jobs = await easel.store.jobs.all()
        if len(jobs) >= n and all(j.status in ("done", "failed") for j in jobs) and easel.easel.worker.busy == 0:
            return True
        bucket = await Limits(easel.store.db).bucket(BUCKET)
        settled = len(jobs) >= n and bucket is not None and bucket.taken == len(_creates(easel.openai)) and all(
            j.status in ("queued", "done", "failed") or (j.status == "running" and j.response_id) for j in jobs)
        wake = clock.next_wake()
        if settled and wake is not None:
            clock.advance_to(wake)
        return False

    await wait_until(step, timeout=timeout, what=f"{n} paced jobs to finish")


async def _mentions(easel: Running, n: int, first: int = 0) -> list[str]:
    """`n` mentions, each in a channel of its own (C0000, C0001, ...) from a user of its own; their ts."""
    return [(await easel.sender.mention(f"a lighthouse number {i}", channel=f"C{i:04d}", user=f"U{i:04d}"))[0]
            for i in range(first, first + n)]


async def _burst(easel: Running, n: int) -> list[str]:
    """One mention, which starts at once (the bucket holds one token); once OpenAI has it, `n - 1` more, which
    all wait for the pacer (the clock stands still until they have been told their places)."""
    threads = await _mentions(easel, 1)

    async def started() -> bool:
        return any(j.response_id for j in await easel.store.jobs.all())

    await wait_until(started, what="the first request to start")
    return threads + await _mentions(easel, n - 1, first=1)


def _places(easel: Running, channel: str, ts: str) -> list[int]:
    """The places a request was told in its thread (posted or updated), in order."""
    places = []
    for call in easel.slack.calls:
        if call.method in ("chat.postMessage", "chat.update") and call.args.get("channel") == channel:
            found = PLACE.search(str(call.args.get("text", "")))
            in_thread = call.method == "chat.update" or call.args.get("thread_ts") == ts
            if found and in_thread:
                places.append(1 if found.group(2) is None else int(found.group(2)))
    return places


def _creates(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path == "/v1/responses"]


async def _all_done(easel: Running, n: int) -> None:
    jobs = await easel.store.jobs.all()
    assert [j.status for j in jobs] == ["done"] * n, [(j.id, j.status, j.error) for j in jobs]
    assert len(easel.slack.shared_files) == n
    failures = [c for c in easel.slack.calls
                if c.method == "chat.postMessage" and ":warning:" in c.args.get("text", "")]
    assert failures == []
    # every 429 was answered once: the SDK retried none of them, the job asked again in its turn
    assert {r.headers["x-stainless-retry-count"] for r in _creates(easel.openai)} == {"0"}


async def test_a_known_limit_is_kept_and_every_waiting_request_told_its_place(paced, clock: ManualClock) -> None:
    easel = await paced(AccountLimits(images_per_minute=30), OPENAI_IMAGES_PER_MINUTE="30")
    threads = await _burst(easel, 6)
    await _drive(easel, clock, 6)
    await _all_done(easel, 6)
    limits = easel.openai.limits
    assert limits.rejected == []
    gaps = [b - a for a, b in zip(limits.admitted_images, limits.admitted_images[1:], strict=False)]
    assert gaps == pytest.approx([60 / 27] * 5)  # evenly, at 90% of the limit
    # each of the others was told its place in the queue when it came in
    for i, ts in enumerate(threads[1:], start=1):
        assert _places(easel, f"C{i:04d}", ts)[0] == i


async def test_an_unknown_limit_is_learned_from_one_429(paced, clock: ManualClock) -> None:
    easel = await paced(AccountLimits(images_per_minute=30), OPENAI_IMAGES_PER_MINUTE="")
    threads = await _burst(easel, 8)
    await _drive(easel, clock, 8)
    await _all_done(easel, 8)
    limits = easel.openai.limits
    assert [kind for _, kind in limits.rejected] == ["images"]
    bucket = await Limits(easel.store.db).bucket(BUCKET)
    assert (bucket.rate, bucket.stated, bucket.probing) == (27.0, 30.0, False)
    # 5 a minute at first (12 s), doubling with each request accepted while others wait: 6 s, 3 s; then
    # 1.5 s was too fast. After the 429's retry-after-ms (500), one every 60/27 s.
    first = limits.admitted_images[0]
    assert limits.rejected[0][0] - first == pytest.approx(10.5)
    assert [t - first for t in limits.admitted_images[:4]] == pytest.approx([0.0, 6.0, 9.0, 11.0 + 60 / 27])
    # the job that met the 429 went back to the queue, was told it is next, and was drawn
    [met] = [j for j in await easel.store.jobs.all() if j.progress.paced]
    assert met.progress.paced == 1
    assert _places(easel, met.channel_id, threads[int(met.channel_id[1:])])[-1] == 1


async def test_a_429_that_does_not_state_the_limit_halves_the_rate(paced, clock: ManualClock) -> None:
    easel = await paced(AccountLimits(images_per_minute=30, states_limit=False), OPENAI_IMAGES_PER_MINUTE="")
    await _burst(easel, 6)
    await _drive(easel, clock, 6)
    await _all_done(easel, 6)
    assert len(easel.openai.limits.rejected) == 1
    bucket = await Limits(easel.store.db).bucket(BUCKET)
    assert bucket.stated is None and 20.0 < bucket.rate < 30.0  # halved from 40, grown 5% a request since


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL
async def test_two_replicas_share_one_limit(paced, clock: ManualClock, database_url: str) -> None:
    # one OpenAI account for both; one generation at a time in the deployment, taking a moment
    first = await paced(AccountLimits(images_per_minute=30), OPENAI_IMAGES_PER_MINUTE="30",
                        MAX_CONCURRENT_GENERATIONS="1")
    second = await paced(account=first.openai, OPENAI_IMAGES_PER_MINUTE="30", MAX_CONCURRENT_GENERATIONS="1")
    first.openai.latency = 0.2
    await _mentions(first, 3)
    await _mentions(second, 3, first=3)
    await _drive(first, clock, 6)
    await wait_until(lambda: first.easel.worker.busy == 0 and second.easel.worker.busy == 0)
    limits = first.openai.limits
    assert limits.rejected == [] and len(limits.admitted_images) == 6
    gaps = [b - a for a, b in zip(limits.admitted_images, limits.admitted_images[1:], strict=False)]
    assert min(gaps) >= 60 / 27 - 1e-6
    # every job ran once, on either (with one deployment-wide cap of 1, whichever claims first runs it)
    assert first.easel.worker.counts["ran"] + second.easel.worker.counts["ran"] == 6



async def test_a_job_that_keeps_meeting_429s_is_given_up_after_ten_waits(paced, clock: ManualClock) -> None:
    easel = await paced(AccountLimits(images_per_minute=30), OPENAI_IMAGES_PER_MINUTE="30")
    easel.openai.add_fault(Fault(status=429, code="rate_limit_exceeded", retry_after=1, times=MAX_PACED + 1))
    [ts] = await _mentions(easel, 1)
    await _drive(easel, clock, 1)
    [job] = await easel.store.jobs.all()
    assert job.status == "failed" and job.error.startswith("rate_limit") and job.progress.paced == MAX_PACED
    assert len(_creates(easel.openai)) == MAX_PACED + 1
    assert any("rate-limiting" in m.get("text", "") for m in easel.slack.thread("C0000", ts))
    assert _places(easel, "C0000", ts) == [1] * MAX_PACED  # told it was next each time it waited again
