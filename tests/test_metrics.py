"""GET /metrics: Prometheus text (read back with prometheus-client's own parser), before and after traffic, in one
process and across `python -m bot`'s two; the bearer token; no unbounded label values."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SIGNING_SECRET, Running, wait_until
from tests.fakes.slack_requests import SlackSender
from tests.procs import BotProcess, free_port, http_env


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def _scrape(url: str, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics", headers=headers) as r:
        return r.status, await r.text()


async def test_metrics_before_and_after_a_request(easel: Running) -> None:
    status, text = await _scrape(easel.url)
    assert status == 200
    before = _samples(text)
    assert before[("easel_queue_depth", ())] == 0
    assert not any(name == "easel_images_posted_total" for name, _ in before)

    ts, _ = await easel.sender.mention("a lighthouse at dusk", user="U1")
    await easel.jobs_settled(1)
    after = _samples((await _scrape(easel.url))[1])
    assert after[("easel_requests_total", (("outcome", "accepted"), ("source", "mention")))] == 1
    assert after[("easel_images_posted_total", (("image_model", "gpt-image-2"),))] == 1
    assert after[("easel_jobs_finished_total", (("kind", "generate"), ("status", "done")))] == 1
    assert after[("easel_generation_seconds_count", (("image_model", "gpt-image-2"), ("quality", "auto")))] == 1
    assert after[("easel_jobs", (("status", "done"),))] == 1
    [cost] = [g["cost_micros"] for g in await easel.store.generations.all()]
    assert after[("easel_cost_dollars_total", (("image_model", "gpt-image-2"),))] == cost / 1_000_000
    for (_, labels) in after:  # nothing of a person or a thread in any label
        for _, value in labels:
            assert value not in ("U1", ts, easel.slack.team_id, "a lighthouse at dusk")


async def test_failures_are_counted_by_kind(easel: Running) -> None:
    await easel.sender.mention("a storm [[moderation]]")
    await easel.jobs_settled(1)
    after = _samples((await _scrape(easel.url))[1])
    assert after[("easel_openai_errors_total", (("kind", "moderation"),))] == 1
    assert after[("easel_jobs_finished_total", (("kind", "generate"), ("status", "failed")))] == 1


async def test_a_metrics_token_is_required_when_set(easel_factory) -> None:
    running = await easel_factory(METRICS_TOKEN="scrape-secret-123")
    assert (await _scrape(running.url))[0] == 401
    assert (await _scrape(running.url, Authorization="Bearer wrong-secret-123"))[0] == 401
    status, text = await _scrape(running.url, Authorization="Bearer scrape-secret-123")
    assert status == 200 and "easel_queue_depth" in text


async def test_python_m_bot_counts_the_worker_process_too(fake_slack, fake_openai, tmp_path: Path) -> None:
    port = free_port()
    bot = BotProcess(http_env(fake_slack, fake_openai, tmp_path, port), tmp_path / "bot.log")
    try:
        await bot.start()
        async with SlackSender(url=f"http://127.0.0.1:{port}/slack/events", signing_secret=SIGNING_SECRET) as s:
            await s.mention("two processes, one count")
        await fake_slack.wait_for("files.completeUploadExternal", timeout=30)

        async def posted() -> dict | None:
            found = _samples((await _scrape(f"http://127.0.0.1:{port}"))[1])
            return found if found.get(("easel_jobs_finished_total", (("kind", "generate"), ("status", "done")))) \
                else None

        found = await wait_until(posted, timeout=30, what="the worker's count to show")
        assert found[("easel_requests_total", (("outcome", "accepted"), ("source", "mention")))] == 1  # serving
        assert found[("easel_images_posted_total", (("image_model", "gpt-image-2"),))] == 1  # the worker's
        assert await bot.terminate() == 0
    finally:
        await bot.ensure_stopped()
