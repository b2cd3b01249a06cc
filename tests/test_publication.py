"""Publishing an image that was paid for: exactly once, whatever Slack's upload steps do."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from tests.conftest import Running


def _per_thread(easel: Running) -> collections.Counter[str]:
    return collections.Counter(f["thread_ts"] for f in easel.slack.shared_files)


def _warnings(easel: Running) -> list[str]:
    told = [m["text"] for m in easel.slack.messages if ":warning:" in (m.get("text") or "")]
    return told + [f"reaction on {key}" for key, names in easel.slack.reactions.items() if "warning" in names]


@pytest.mark.parametrize("lost", [{"status": 500, "error": "internal_error"}, {"drop": True}],
                         ids=["answered 500", "connection dropped"])
async def test_a_share_whose_answer_was_lost_is_not_made_again(easel: Running, lost: dict[str, Any]) -> None:
    """Slack shared the image, then its answer to files.completeUploadExternal was a 500 or never came. Easel
    asks Slack (files.info) before doing anything again: the thread has the image once."""
    easel.slack.add_fault("files.completeUploadExternal", after_commit=True, **lost)
    ts, _ = await easel.sender.mention("a lighthouse at dusk")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "done", job.error
    assert _per_thread(easel) == {ts: 1}
    assert len(easel.slack.calls_to("files.completeUploadExternal")) == 1
    assert _warnings(easel) == []
    [generation] = await easel.store.generations.all(job_id=job.id)
    assert generation["slack_file_id"] == easel.slack.shared_files[0]["file_id"]


async def test_a_stretch_of_slack_errors_does_not_lose_a_paid_image(easel_factory: Any) -> None:
    """Every files.getUploadURLExternal fails for a while (each upload's retries included): the answers are kept
    and their publication tried again with back-off; every image arrives once, no one is told of a failure,
    and no generation is paid for twice."""
    easel: Running = await easel_factory(PUBLISH_RETRY_SECONDS="60")
    n = 5
    easel.openai.gate.clear()
    threads = [(await easel.sender.mention(f"a kite {i}", channel=f"C{i}", user=f"U{i}"))[0] for i in range(n)]
    await easel.openai.wait_for_creates(n)
    # each upload tries its first step six times (two tries of three calls) before it gives up: all fail
    easel.slack.add_outage("files.getUploadURLExternal", calls=6 * n, status=503)
    easel.openai.gate.set()
    jobs = await easel.jobs_settled(n, timeout=60)
    print(f"\nSlack outage of {6 * n} calls: threads={n} images={len(easel.slack.shared_files)} "
          f"told_failed={len(_warnings(easel))}")
    assert [j.status for j in jobs] == ["done"] * n, [j.error for j in jobs]
    assert _per_thread(easel) == {ts: 1 for ts in threads}
    assert _warnings(easel) == []
    assert len(easel.openai.create_requests()) == n


async def test_a_lost_share_answer_is_settled_once_slack_can_say(easel_factory: Any) -> None:
    """The share went through but its answer was lost, and files.info fails too just then: Easel cannot tell
    whether the image is in the thread, so it neither posts it again nor gives up; it asks again later."""
    easel: Running = await easel_factory(PUBLISH_RETRY_SECONDS="60")
    easel.slack.add_fault("files.completeUploadExternal", after_commit=True, status=500, error="internal_error")
    easel.slack.add_outage("files.info", calls=3, status=500)  # the SDK's own retries of files.info included
    ts, _ = await easel.sender.mention("a harbour at night")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "done", job.error
    assert _per_thread(easel) == {ts: 1}
    assert len(easel.slack.calls_to("files.info")) == 4
    assert _warnings(easel) == []
