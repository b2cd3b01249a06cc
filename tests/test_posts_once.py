"""Posts that are not images are made once across a crash: each carries message metadata naming its job, and
a job taken again looks for it before posting. `python -m bot` is killed (SIGKILL) after Slack has posted a
message and before Easel heard of it; the next start finds the message and does not post it again. On SQLite
and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIGNING_SECRET, wait_until
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender
from tests.procs import BotProcess, free_port


@pytest.fixture
async def crashing(database_url: str, tmp_path: Path) -> Any:
    async with FakeSlack() as slack, FakeOpenAI() as openai:
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "OPENAI_API_KEY": openai.api_key,
            "OPENAI_BASE_URL": openai.base_url,
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "OPENAI_IMAGES_PER_MINUTE": "60000",
            "JOB_LEASE_SECONDS": "2",
            "WORKER_POLL_SECONDS": "0.5",
        }
        bot = BotProcess(env, tmp_path / "bot.log")
        sender = SlackSender(url=f"http://127.0.0.1:{port}/slack/events", signing_secret=SIGNING_SECRET)
        try:
            yield bot, slack, openai, sender
        finally:
            await sender.close()
            await bot.ensure_stopped()


def _tagged(slack: FakeSlack, post: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages if (m.get("metadata") or {}).get("event_type") == "easel_post"
            and m["metadata"]["event_payload"]["post"] == post]


async def test_a_command_root_posted_just_before_a_crash_is_not_posted_again(crashing: Any) -> None:
    bot, slack, openai, sender = crashing
    await bot.start()
    held = slack.hold_answer("chat.postMessage")
    result = await sender.command("a lighthouse at dusk", channel="C0042")
    assert result.status == 200
    await wait_until(lambda: len(_tagged(slack, "root")) == 1, timeout=30, what="the root message posted")
    await bot.kill()  # Slack posted it; Easel never heard its answer, nor recorded its ts
    held.set()
    await bot.start()  # the dead worker's lease ends at once at this start: the job is noticed again
    await wait_until(lambda: len(slack.shared_files) == 1, timeout=60, what="the image")
    [root] = _tagged(slack, "root")
    assert isinstance(root["metadata"]["event_payload"]["job"], int) and root["thread_ts"] in (None, root["ts"])
    assert slack.shared_files[0]["thread_ts"] == root["ts"]  # the image went into the message found again
    roots = [m for m in slack.messages if m.get("user") == slack.bot_user_id and m.get("thread_ts") in (None, m["ts"])]
    assert len(roots) == 1
    looks = slack.calls_to("conversations.history")
    assert looks and str(looks[-1].args.get("include_all_metadata")).lower() in ("1", "true")
    assert slack.unknown_arguments == []


async def test_a_text_answer_posted_just_before_a_crash_is_not_posted_again(crashing: Any) -> None:
    bot, slack, openai, sender = crashing
    await bot.start()
    ts, _ = await sender.mention("what styles do you know? [[text]]", channel="C0043")
    await wait_until(lambda: len(_tagged(slack, "queue")) == 1, timeout=30, what="the status message")
    held = slack.hold_answer("chat.postMessage")  # the next post: the text answer
    await wait_until(lambda: len(_tagged(slack, "text")) == 1, timeout=30, what="the text answer posted")
    await bot.kill()
    held.set()
    await bot.start()
    await wait_until(lambda: slack.calls_to("conversations.replies"), timeout=30, what="a look for the answer")
    await wait_until(lambda: not any("hourglass_flowing_sand" in names for names in slack.reactions.values()),
                     timeout=30, what="the job to end")
    assert len(_tagged(slack, "text")) == 1
    answers = [m for m in slack.thread("C0043", ts) if m.get("user") == slack.bot_user_id]
    assert len(answers) == 1, [(m.get("text"), m.get("metadata")) for m in answers]
    assert len(openai.create_requests()) == 1  # the same response was collected again, not asked for anew


def _with_buttons(slack: FakeSlack) -> list[dict[str, Any]]:
    return [m for m in slack.messages
            if any(b.get("type") == "actions" and b["elements"][0]["action_id"] == "easel.reroll"
                   for b in m.get("blocks") or [])]


async def test_an_images_buttons_posted_just_before_a_crash_are_not_posted_again(crashing: Any) -> None:
    bot, slack, openai, sender = crashing
    await bot.start()
    ts, _ = await sender.mention("a kite over the sea", channel="C0044")
    await wait_until(lambda: len(_tagged(slack, "queue")) == 1, timeout=30, what="the status message")
    held = slack.hold_answer("chat.postMessage")  # the next post: the buttons under the image
    await wait_until(lambda: len(_with_buttons(slack)) == 1, timeout=60, what="the buttons posted")
    assert len(slack.shared_files) == 1
    await bot.kill()  # Slack posted them; Easel never heard, nor recorded that it had
    held.set()
    await bot.start()
    await wait_until(lambda: not any("hourglass_flowing_sand" in names for names in slack.reactions.values()),
                     timeout=60, what="the job to end")
    assert len(_with_buttons(slack)) == 1, "the buttons were posted again"
    [buttons] = _with_buttons(slack)
    assert buttons["thread_ts"] == ts and _tagged(slack, "buttons") == [buttons]
    assert [b["action_id"] for b in buttons["blocks"][-1]["elements"]] == [
        "easel.reroll", "easel.vary", "easel.hd", "easel.edit"]
    assert len(slack.shared_files) == 1  # the image was found shared, not uploaded again
    assert len(openai.create_requests()) == 1
