"""An image's message (its comment on the upload) reaches Slack whatever its length or script, and an answer
from Slack that is not JSON is an error to handle, not a crash."""

from __future__ import annotations

from tests.conftest import Running
from tests.fakes.slack_api import MAX_REQUEST_LINE

FOX = "ü🦊 "  # 2 + 4 + 1 bytes of UTF-8: percent-encoded, 19 characters of URL for 3 of text


async def test_a_long_non_ascii_revised_prompt_is_posted_with_its_image(easel: Running) -> None:
    prompt = "a fox " + FOX * 700  # the fake's revised prompt repeats it: some 13 KB of URL if sent there
    ts, _ = await easel.sender.mention(prompt)
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "done", job.error
    assert easel.slack.refused == []
    [shared] = easel.slack.shared_files
    assert shared["thread_ts"] == ts
    comment = shared["initial_comment"]
    assert "A detailed rendering of: a fox ü🦊" in comment
    assert len(comment) <= 4000
    [call] = easel.slack.calls_to("files.completeUploadExternal")
    assert "initial_comment" not in call.path and len(call.path) < MAX_REQUEST_LINE
    assert b"initial_comment=" in call.body  # in the form body


async def test_a_non_json_error_from_slack_is_retried_like_any_other(easel: Running) -> None:
    easel.slack.add_fault("files.completeUploadExternal", status=400, error="bad request", plain=True)
    await easel.sender.mention("a lighthouse")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "done", job.error
    assert len(easel.slack.shared_files) == 1


async def test_a_non_json_error_to_a_reaction_does_not_stop_the_job(easel: Running) -> None:
    easel.slack.add_fault("reactions.add", status=502, error="bad gateway", plain=True, times=5)
    await easel.sender.mention("a harbour")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "done", job.error
    assert len(easel.slack.shared_files) == 1
