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
    [generation] = await easel.store.generations(job_id=job.id)
    assert generation["slack_file_id"] == easel.slack.shared_files[0]["file_id"]
