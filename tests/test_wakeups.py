"""The worker starts each step because something told it to, never because its poll came round.

Each test runs Easel with a poll of an hour: a step that waited for the poll would never come within the
deadlines here. (The poll exists for work no one tells a worker of: another replica's jobs, dead leases.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.conftest import Running, wait_until

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
