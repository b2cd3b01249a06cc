"""End-to-end flows through real Bolt, slack_sdk and openai code, against the fakes."""

from __future__ import annotations

import base64

from tests.conftest import Running, wait_until
from tests.fakes.openai_api import default_image_factory


async def test_mention_answers_in_thread_with_image_and_revised_prompt(easel: Running) -> None:
    ts, result = await easel.sender.mention("a fox in a bowler hat")
    assert result.status == 200
    await easel.slack.wait_for("files.completeUploadExternal")
    [shared] = easel.slack.shared_files
    assert shared["thread_ts"] == ts
    assert shared["channel_id"] == "C0001"
    assert shared["filename"].endswith(".png")
    assert shared["bytes"] == default_image_factory(1024, 1024, "png", "a fox in a bowler hat")
    assert "A detailed rendering of: a fox in a bowler hat" in shared["initial_comment"]
    [create] = easel.openai.create_requests()
    assert create["tools"][0]["type"] == "image_generation"
    assert create["tools"][0]["model"] == "gpt-image-2"
    assert create["model"] == "gpt-5.4"
    assert create["tool_choice"] == "auto"
    assert create["instructions"]
    assert "previous_response_id" not in create
    await easel.jobs_settled(1)
