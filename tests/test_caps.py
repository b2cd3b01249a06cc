"""Requests over the per-person cap: one message per burst, a reaction on each refused request."""

from __future__ import annotations

from bot import messages
from tests.conftest import Running


def _cap_notices(easel: Running) -> list[dict]:
    return [m for m in easel.slack.messages if "requests in progress" in m["text"]]


def _status(message: dict) -> bool:
    return ((message.get("metadata") or {}).get("event_payload") or {}).get("post") == "queue"


def _refused(easel: Running) -> int:
    return sum(1 for names in easel.slack.reactions.values() if messages.REFUSED_REACTION in names)


async def test_a_burst_over_the_cap_is_told_once(easel_factory) -> None:
    # 75 reactions within seconds are past Slack's Tier 3 (50 a minute): Easel's budget would rightly skip some.
    easel: Running = await easel_factory(MAX_QUEUED_PER_USER="5", SLACK_RATE_LIMITS="off")
    easel.openai.latency = 3.0  # the first five are still generating while the rest arrive
    for i in range(40):
        await easel.sender.mention(f"image {i}", channel=f"C{i % 4}")
    await easel.slack.wait_until(lambda: _refused(easel) >= 35, timeout=20, what="35 refused reactions")
    await easel.slack.wait_for("files.completeUploadExternal", count=5, timeout=30)
    jobs = await easel.jobs_settled(timeout=30)
    assert sum(1 for j in jobs if j.kind == "generate") == 5
    assert len(_cap_notices(easel)) == 1, [m["text"] for m in _cap_notices(easel)]
    assert _refused(easel) == 35
    # the one notice is the only message Easel posted but for the five images' buttons and status messages
    assert [m for m in easel.slack.messages if not m.get("blocks") and not _status(m)] == _cap_notices(easel)
    # A later request is taken again; a later burst is told again, once.
    easel.openai.latency = 3.0
    for i in range(8):
        await easel.sender.mention(f"again {i}", channel="C9")
    await easel.slack.wait_until(lambda: _refused(easel) >= 38, timeout=20, what="3 more refused reactions")
    await easel.jobs_settled(timeout=30)
    assert len(_cap_notices(easel)) == 2


async def test_a_redelivered_refused_request_is_still_one_reaction(easel_factory) -> None:
    easel: Running = await easel_factory(MAX_QUEUED_PER_USER="1")
    easel.openai.latency = 2.0
    await easel.sender.mention("first")
    ts, _ = await easel.sender.mention("second")
    await easel.sender.mention("second", ts=ts, retry_num=1)
    await easel.slack.wait_until(lambda: _refused(easel) >= 1, timeout=10, what="the refused reaction")
    await easel.jobs_settled(timeout=30)
    assert len(easel.slack.calls_to("reactions.add")) == 2  # the first's hourglass, the second's refusal
    assert len(_cap_notices(easel)) == 1
