"""Kill `python -m bot` with SIGKILL while generations are in flight, start it again: every accepted request is
answered exactly once. Also: SIGTERM hands unfinished work back, and secrets never reach the logs."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIGNING_SECRET, wait_until
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender
from tests.procs import BotProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-chaos-0123456789abcdef-secret"


@pytest.fixture
async def chaos(database_url: str, tmp_path: Path) -> Any:
    async with FakeSlack() as slack, FakeOpenAI(api_key=API_KEY) as openai:
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": openai.base_url,
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "MAX_CONCURRENT_GENERATIONS": "4",
            "OPENAI_IMAGES_PER_MINUTE": "60000",  # the fake account has no image limit
            # Two dozen signs of work taken down within seconds are past Slack's Tier 2 for reactions.remove
            # (20 a minute): Easel would rightly spread them over a minute, longer than these tests wait.
            "SLACK_RATE_LIMITS": "off",
            "JOB_LEASE_SECONDS": "2",
            "SHUTDOWN_GRACE_SECONDS": "0.5",
            "LOG_LEVEL": "DEBUG",
        }
        bot = BotProcess(env, tmp_path / "bot.log")
        sender = SlackSender(url=f"http://127.0.0.1:{port}/slack/events", signing_secret=SIGNING_SECRET)
        try:
            yield bot, slack, openai, sender
        finally:
            await sender.close()
            await bot.ensure_stopped()


def _per_thread(slack: FakeSlack) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((f["channel_id"], f["thread_ts"]) for f in slack.shared_files)


async def test_sigkill_mid_flight_loses_and_doubles_nothing(chaos: Any) -> None:
    bot, slack, openai, sender = chaos
    openai.latency = 0.4
    n, kills = 24, 2
    await bot.start()
    threads = []
    for i in range(n):
        ts, result = await sender.mention(f"painting number {i}", channel=f"C{i:04d}", user=f"U{i:04d}")
        assert result.status == 200
        threads.append((f"C{i:04d}", ts))
    for k in range(kills):  # kill while generations are running and images are arriving
        await wait_until(lambda k=k: len(slack.shared_files) >= (k + 1) * n // (kills + 2), timeout=60,
                         what="some images")
        await bot.kill()
        await bot.start()
    await wait_until(lambda: len(_per_thread(slack)) == n, timeout=120, what="every request answered")
    await wait_until(lambda: slack.reactions and not any(
        "hourglass_flowing_sand" in names for names in slack.reactions.values()), timeout=30,
        what="every sign of work cleared")
    per_thread = _per_thread(slack)
    duplicates = sum(c - 1 for c in per_thread.values())
    lost = [t for t in threads if per_thread[t] == 0]
    creates = len(openai.create_requests())
    print(f"\nchaos: requests={n} kills={kills} images={len(slack.shared_files)} duplicates={duplicates} "
          f"lost={len(lost)} generations_paid={creates}")
    assert duplicates == 0 and lost == []
    assert len(slack.shared_files) == n
    for channel, ts in threads:  # each image is the one asked for, in its own thread
        [shared] = [f for f in slack.shared_files if f["thread_ts"] == ts]
        assert shared["channel_id"] == channel
    log = bot.log.read_text()
    for secret in (slack.bot_token, SIGNING_SECRET, API_KEY):
        assert secret not in log


async def test_sigterm_hands_running_work_back_and_the_next_start_finishes_it(chaos: Any) -> None:
    bot, slack, openai, sender = chaos
    openai.latency = 3
    await bot.start()
    ts, _ = await sender.mention("a slow mural")
    await wait_until(lambda: openai.in_flight == 1, timeout=30, what="the generation to start")
    assert await bot.terminate() == 0  # grace 0.5 s < 3 s: the job is handed back unfinished
    assert slack.shared_files == []
    await bot.start()
    await wait_until(lambda: len(slack.shared_files) == 1, timeout=60, what="the image after restart")
    assert slack.shared_files[0]["thread_ts"] == ts
    assert len(openai.create_requests()) == 1  # the same background response was collected
    assert "handed back unfinished" in bot.log.read_text()
