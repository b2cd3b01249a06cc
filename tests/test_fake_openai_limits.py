"""The fake OpenAI's per-account rate limits, driven with the real SDK (no retries, to see each answer)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from tests.clock import ManualClock
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.openai_limits import AccountLimits, reset_text

TOOL = {"type": "image_generation", "model": "gpt-image-2"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def _fake(limits: AccountLimits) -> AsyncIterator[tuple[FakeOpenAI, openai.AsyncOpenAI]]:
    async with FakeOpenAI(limits=limits) as fake:
        client = openai.AsyncOpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
        try:
            yield fake, client
        finally:
            await client.close()


@pytest.fixture
async def account(clock: ManualClock) -> AsyncIterator[tuple[FakeOpenAI, openai.AsyncOpenAI]]:
    async for pair in _fake(AccountLimits(images_per_minute=30, requests_per_minute=600, clock=clock.now)):
        yield pair


async def _create(client: openai.AsyncOpenAI) -> openai.types.responses.Response:
    return await client.responses.create(model="gpt-5.4", input="a fox", tools=[TOOL])


async def test_images_beyond_the_limit_get_openais_429(account, clock: ManualClock) -> None:
    fake, client = account
    raw = await client.responses.with_raw_response.create(model="gpt-5.4", input="a fox", tools=[TOOL])
    assert raw.headers["x-ratelimit-limit-requests"] == "600"
    assert raw.headers["x-ratelimit-remaining-requests"] == "9"  # 600 a minute, held 10 (a second's worth) at most
    assert raw.headers["x-ratelimit-reset-requests"] == "100ms"
    clock.advance(1.5)  # 30 a minute is one image every 2 s
    with pytest.raises(openai.RateLimitError) as info:
        await _create(client)
    e = info.value
    assert e.status_code == 429 and e.code == "rate_limit_exceeded" and e.type == "requests"
    assert e.message.removeprefix("Error code: 429 - ").startswith(
        "Rate limit reached for gpt-image-2 in organization org-fake on images per min (IPM): Limit 30, Used 1, "
        "Requested 1. Please try again in 500ms.")
    assert e.response.headers["retry-after-ms"] == "500" and e.response.headers["retry-after"] == "1"
    assert "x-ratelimit-remaining-requests" in e.response.headers
    assert fake.limits.rejected == [(clock.now(), "images")]
    clock.advance(0.5)
    await _create(client)
    assert len(fake.limits.admitted_images) == 2


async def test_a_rejected_request_uses_nothing_up(account, clock: ManualClock) -> None:
    fake, client = account
    await _create(client)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as info:
            await _create(client)
        assert info.value.response.headers["x-ratelimit-remaining-requests"] == "9"  # a 429 is not counted
    clock.advance(2.0)
    await _create(client)  # the three 429s did not use the next image up
    assert len(fake.limits.admitted_images) == 2 and len(fake.limits.rejected) == 3


async def test_other_requests_count_only_against_the_request_limit(clock: ManualClock) -> None:
    async for fake, client in _fake(AccountLimits(images_per_minute=30, requests_per_minute=60, clock=clock.now)):
        created = await _create(client)
        with pytest.raises(openai.RateLimitError) as info:  # one request a second
            await client.responses.retrieve(created.id)
        assert "on requests per min (RPM): Limit 60" in info.value.message
        assert fake.limits.rejected == [(clock.now(), "requests")]
        clock.advance(1.0)
        assert (await client.responses.retrieve(created.id)).id == created.id


async def test_the_limit_can_be_left_out_of_the_message(clock: ManualClock) -> None:
    limits = AccountLimits(images_per_minute=6, states_limit=False, clock=clock.now)
    async for _fake_openai, client in _fake(limits):
        await _create(client)
        with pytest.raises(openai.RateLimitError) as info:
            await _create(client)
        assert info.value.message.endswith(" - Rate limit reached for gpt-image-2. Please try again in 10s.")


async def test_unlimited_by_default_and_no_headers() -> None:
    async with FakeOpenAI() as fake:
        client = openai.AsyncOpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
        try:
            for _ in range(5):
                raw = await client.responses.with_raw_response.create(model="gpt-5.4", input="a fox", tools=[TOOL])
                assert "x-ratelimit-limit-requests" not in raw.headers
        finally:
            await client.close()


@pytest.mark.parametrize(("seconds", "text"), [(0.0172, "17ms"), (1.0, "1s"), (1.5, "1.5s"), (360.0, "6m0s"),
                                              (90.5, "1m30.5s")])
def test_reset_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert reset_text(seconds) == text
