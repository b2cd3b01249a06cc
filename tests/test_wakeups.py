"""The worker starts each step because something told it to, never because its poll came round.

Each test runs Easel with a poll of an hour: a step that waited for the poll would never come within the
deadlines here. (The poll exists for work no one tells a worker of: another replica's jobs, dead leases.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from bot import assembly as easel_app
from bot import web as easel_web
from bot.worker import wait_at_most
from tests.conftest import SIGNING_SECRET, Running, settings_for, wait_until
from tests.fakes.slack_requests import SlackSender

NO_POLL = {"WORKER_POLL_SECONDS": "3600"}


async def test_lone_requests_one_after_another(easel_factory: Callable[..., Awaitable[Running]]) -> None:
    easel = await easel_factory(**NO_POLL)
    for i in range(3):
        await easel.sender.mention(f"picture {i}", channel=f"C{i}")
        await wait_until(lambda i=i: len(easel.slack.shared_files) == i + 1, what=f"image {i + 1}")
    await easel.jobs_settled(3)


async def test_replies_waiting_behind_their_thread(easel_factory: Callable[..., Awaitable[Running]]) -> None:
    easel = await easel_factory(**NO_POLL)
    easel.openai.latency = 0.5
    ts, _ = await easel.sender.mention("a house")
    await easel.openai.wait_for_creates(1)
    await easel.sender.message("add a garden", thread_ts=ts)  # noticed while the first generates
    await easel.sender.message("add a dog", thread_ts=ts)
    await easel.jobs_settled(3)
    assert [c["input"][0]["content"][0]["text"] for c in easel.openai.create_requests()] == [
        "a house", "add a garden", "add a dog"]


async def test_a_reply_that_arrives_as_its_thread_finishes(easel_factory: Callable[..., Awaitable[Running]]) -> None:
    """The reply's sign of work and the first job's end race; whichever wins, the reply runs."""
    easel = await easel_factory(**NO_POLL)
    for round_ in range(5):
        ts, _ = await easel.sender.mention(f"round {round_}", channel=f"C{round_}")
        await easel.slack.wait_for("files.getUploadURLExternal", count=round_ + 1)  # the first is finishing
        await easel.sender.message("again", channel=f"C{round_}", thread_ts=ts)
        await easel.jobs_settled(2 * (round_ + 1))


async def test_more_requests_than_generation_slots(easel_factory: Callable[..., Awaitable[Running]]) -> None:
    easel = await easel_factory(MAX_CONCURRENT_GENERATIONS="2", **NO_POLL)
    easel.openai.latency = 0.2
    for i in range(7):
        await easel.sender.mention(f"image {i}", channel=f"C{i}", user=f"U{i}")
    await easel.jobs_settled(7)
    assert len(easel.slack.shared_files) == 7


async def test_slash_commands_and_their_threads(easel_factory: Callable[..., Awaitable[Running]]) -> None:
    easel = await easel_factory(**NO_POLL)
    for i in range(2):
        result = await easel.sender.command(f"a lighthouse {i}", channel=f"C{i}")
        assert result.status == 200
    await easel.jobs_settled(2)
    assert len(easel.slack.shared_files) == 2


async def test_work_no_one_told_of_is_found_by_the_poll(
    easel_factory: Callable[..., Awaitable[Running]], database_url: str
) -> None:
    """A request stored by another replica (its intake wakes only its own worker): this worker finds it by
    its periodic look, and so do queue positions and dead leases (tests/test_chaos.py, test_replicas.py)."""
    easel = await easel_factory(WORKER_POLL_SECONDS="0.2")
    other = await easel_app.build_intake(settings_for(easel.slack, easel.openai, database_url), wake=lambda: None)
    runner = web.AppRunner(easel_web.web_app(other))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        sender = SlackSender(url=f"http://127.0.0.1:{runner.addresses[0][1]}{easel_web.EVENTS_PATH}",
                             signing_secret=SIGNING_SECRET, team_id=easel.slack.team_id,
                             bot_user_id=easel.slack.bot_user_id)
        try:
            ts, result = await sender.mention("stored elsewhere")
            assert result.status == 200
            await easel.jobs_settled(1)
            assert [f["thread_ts"] for f in easel.slack.shared_files] == [ts]
        finally:
            await sender.close()
    finally:
        await runner.cleanup()
        await other.close()


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
async def test_a_wait_cancelled_as_its_event_is_set_is_cancelled(steps: int) -> None:
    """Stopping a worker cancels its loops while they wait; the event they wait on may be set in that same
    moment (stopping wakes them). The cancellation must win, or the loop goes on waiting and the stop hangs."""
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_at_most(event, 3600))
    await asyncio.sleep(0)
    event.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    if waiting.done():  # the wait was over before the stop: nothing to cancel
        assert waiting.result() is None
        return
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_wait_ends_at_its_limit() -> None:
    await asyncio.wait_for(wait_at_most(asyncio.Event(), 0.01), 5)
