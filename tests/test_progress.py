"""Live progress through signed HTTP and the real SDKs, on both databases: every generate job's one status
message (its place, then the drawing with the time so far and the time left, learned from the recent
generations like it), previews of the image forming (PREVIEW_IMAGES), and a burst kept within Slack's published
rate-limit tiers (the fake Slack enforcing them per workspace)."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.progress import Estimates, Progress
from bot.slack import SlackAdapter
from tests.clock import ManualClock
from tests.conftest import Running, wait_until
from tests.fakes.slack_api import FakeSlack


def _status_posts(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [m for m in [*slack.messages, *slack.deleted_messages] if m["channel"] == channel
            and ((m.get("metadata") or {}).get("event_payload") or {}).get("post") == "queue"]


def _updates(slack: FakeSlack, ts: str) -> list[dict[str, Any]]:
    return [c.args for c in slack.calls_to("chat.update") if c.args.get("ts") == ts]


def _index(slack: FakeSlack, method: str, pred: Any = lambda args: True) -> int:
    """Where the first call to `method` matching `pred` is among all calls (-1: none)."""
    return next((i for i, c in enumerate(slack.calls) if c.method == method and pred(c.args)), -1)


async def test_the_status_message_shows_the_drawing_then_goes(easel_factory: Any) -> None:
    easel: Running = await easel_factory(PREVIEW_IMAGES="0")
    easel.openai.latency = 1.0
    ts, _ = await easel.sender.mention("a lighthouse --quality low --size 1024x1024", channel="C1")
    await easel.jobs_settled(1, timeout=30)
    [status] = _status_posts(easel.slack, "C1")
    assert status["thread_ts"] == ts
    texts = [status["text"], *(u["text"] for u in _updates(easel.slack, status["ts"]))]
    assert any("Drawing with gpt-image-2 (low quality, 1024x1024)" in t for t in texts), texts
    assert not any("left" in t for t in texts)  # no generation like it yet: no estimate is made up
    await wait_until(lambda: any(c.args.get("ts") == status["ts"] for c in easel.slack.calls_to("chat.delete")),
                     timeout=10, what="the status message to go")
    deleted = _index(easel.slack, "chat.delete", lambda a: a.get("ts") == status["ts"])
    assert deleted > _index(easel.slack, "files.completeUploadExternal")  # after the image, not before
    assert len(easel.slack.shared_files) == 1


async def test_the_status_message_says_drawing_only_once_the_image_has_begun(easel_factory: Any) -> None:
    easel: Running = await easel_factory(PREVIEW_IMAGES="0")
    easel.openai.latency = 1.0
    await easel.sender.mention("a lighthouse --quality low --size 1024x1024", channel="C1")
    await easel.sender.mention("[[text]] which styles suit a lighthouse?", channel="C2")
    await easel.jobs_settled(2, timeout=30)
    [drawn] = _status_posts(easel.slack, "C1")
    texts = [u["text"] for u in _updates(easel.slack, drawn["ts"])]  # in order (a message shows its last text)
    working = [i for i, t in enumerate(texts) if t.startswith(":thought_balloon: Working on it")]
    drawing = [i for i, t in enumerate(texts) if t.startswith(":art: Drawing with gpt-image-2")]
    assert working and drawing and working[0] < drawing[0] and max(working) < drawing[0], texts
    [answered] = _status_posts(easel.slack, "C2")
    said = [answered["text"], *(u["text"] for u in _updates(easel.slack, answered["ts"]))]
    assert any("Working on it" in t for t in said) and not any("Drawing" in t for t in said), said
    assert len(easel.slack.shared_files) == 1


async def test_the_time_left_is_the_median_of_the_recent_generations_like_it(easel_factory: Any) -> None:
    easel: Running = await easel_factory(PREVIEW_IMAGES="0")
    for i, latency in enumerate((1.0, 3.0, 2.0)):
        easel.openai.latency = latency
        await easel.sender.mention(f"a boat {i} --quality low --size 1024x1024", channel=f"C{i}")
        await easel.jobs_settled(i + 1, timeout=30)
    easel.openai.latency = 0.5
    await easel.sender.mention("a boat 3 --quality low --size 1024x1024", channel="C3")
    await easel.sender.mention("a boat 4 --quality high --size 1024x1024", channel="C4")
    await easel.jobs_settled(5, timeout=30)
    [status] = _status_posts(easel.slack, "C3")
    texts = [status["text"], *(u["text"] for u in _updates(easel.slack, status["ts"]))]
    took = [float(m.group(1)) for t in texts if (m := re.search(r"recent ones took (?:about )?(\d+) s", t))]
    assert took and took[0] == 2  # the median of about 1, 3 and 2 seconds: not their mean, not a constant
    [other] = _status_posts(easel.slack, "C4")
    other_texts = [other["text"], *(u["text"] for u in _updates(easel.slack, other["ts"]))]
    assert not any("recent ones" in t for t in other_texts)  # another quality: nothing to go by yet


async def test_a_status_message_is_rewritten_at_most_every_five_seconds(fake_slack: FakeSlack) -> None:
    clock = ManualClock()

    class NoHistory:
        async def recent_durations(self, image_model: str, *, limit: int) -> list[tuple[dict[str, Any], int]]:
            return [({"quality": "low", "size": "1024x1024"}, 40_000)]

    async with aiohttp.ClientSession() as http:
        slack = SlackAdapter(AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url, session=http),
                             session=http)
        [ts] = await slack.post("C1", None, "status")
        progress = Progress(slack=slack, estimates=Estimates(NoHistory(), clock=clock.now), clock=clock.now)
        drawing = await progress.begin(job_id=1, team_id="T0001", channel="C1", ts=ts,
                                       tool={"model": "gpt-image-2", "quality": "low", "size": "1024x1024"})
        assert len(_updates(fake_slack, ts)) == 1
        assert "about 40 s left" in _updates(fake_slack, ts)[-1]["text"]
        for seconds in (1, 2, 3, 4.9):
            clock.advance_to(drawing.started + seconds)
            await progress.tick()
        assert len(_updates(fake_slack, ts)) == 1  # nothing before five seconds have passed
        clock.advance_to(drawing.started + 5)
        await progress.tick()
        assert len(_updates(fake_slack, ts)) == 2
        assert "5 s so far, about 35 s left" in _updates(fake_slack, ts)[-1]["text"]
        clock.advance_to(drawing.started + 44)
        await progress.tick()
        assert "should be nearly done" in _updates(fake_slack, ts)[-1]["text"]
        await progress.finished(1)
        clock.advance_to(drawing.started + 60)
        await progress.tick()
        assert len(_updates(fake_slack, ts)) == 3  # finished: no rewrite follows
        await slack.close()


async def test_a_preview_shows_in_the_status_message_and_is_deleted_after_the_final(easel_factory: Any) -> None:
    easel: Running = await easel_factory(PREVIEW_IMAGES="1")
    easel.openai.latency = 1.5
    await easel.sender.mention("a red kite", channel="C1")
    await easel.jobs_settled(1, timeout=30)
    [request] = easel.openai.create_requests()
    assert request["tools"][0]["partial_images"] == 1
    [status] = _status_posts(easel.slack, "C1")
    shown = [u for u in _updates(easel.slack, status["ts"]) if u.get("blocks")]
    assert shown, "no preview was shown"
    blocks = shown[-1]["blocks"]
    blocks = blocks if isinstance(blocks, list) else json.loads(blocks)
    preview = blocks[-1]["slack_file"]["id"]
    assert preview in {f["file_id"] for f in easel.slack.private_files}  # uploaded, shared nowhere
    assert _index(easel.slack, "chat.update", lambda a: bool(a.get("blocks"))) < \
        _index(easel.slack, "files.completeUploadExternal", lambda a: bool(a.get("channel_id")))
    await wait_until(lambda: preview in easel.slack.deleted_files, timeout=10, what="the preview deleted")
    [image] = easel.slack.shared_files
    assert image["file_id"] not in easel.slack.deleted_files


async def test_a_preview_that_comes_after_the_final_is_never_shown(easel_factory: Any) -> None:
    easel: Running = await easel_factory(PREVIEW_IMAGES="2")
    easel.openai.latency = 1.0
    await easel.sender.mention("a blue heron [[late_partials]]", channel="C1")
    await easel.jobs_settled(1, timeout=30)
    [status] = _status_posts(easel.slack, "C1")
    assert not [u for u in _updates(easel.slack, status["ts"]) if u.get("blocks")]  # no preview replaced it
    await wait_until(lambda: any(c.args.get("ts") == status["ts"] for c in easel.slack.calls_to("chat.delete")),
                     timeout=10, what="the status message to go")
    left = {f["file_id"] for f in easel.slack.private_files} - set(easel.slack.deleted_files)
    assert not left  # a late preview is not even uploaded (or, if it was, it is deleted)
    assert len(easel.slack.shared_files) == 1


async def test_a_burst_keeps_within_slacks_tiers_and_posts_every_image_once(easel_factory: Any) -> None:
    easel: Running = await easel_factory(PREVIEW_IMAGES="1", MAX_QUEUED_PER_USER="100")
    easel.slack.set_rate_limits(True)  # Slack's published tiers, per workspace and method
    easel.openai.latency = 1.0
    n = 70  # more signs of work than reactions.add allows in a minute (Tier 3: 50)
    threads = []
    for i in range(n):
        ts, result = await easel.sender.mention(f"a tiny robot {i}", channel=f"C{i:03d}", user=f"U{i % 7}")
        assert result.status == 200
        threads.append((f"C{i:03d}", ts))
    await easel.jobs_settled(n, timeout=90)
    per_thread = {t: 0 for t in threads}
    for f in easel.slack.shared_files:
        per_thread[(f["channel_id"], f["thread_ts"])] += 1
    assert set(per_thread.values()) == {1}  # every image exactly once
    assert len(easel.slack.rate_limited) <= 3, easel.slack.rate_limited_counts()
    reacted = {c.args["timestamp"] for c in easel.slack.calls_to("reactions.add")
               if c.args.get("name") == "hourglass_flowing_sand"}
    statused = {m["thread_ts"] for c, _ in threads for m in _status_posts(easel.slack, c)}
    assert all(ts in reacted or ts in statused for _, ts in threads)  # every request showed a sign of work
    assert len(reacted) < n  # the reactions ran out: the status messages were the sign for the rest
