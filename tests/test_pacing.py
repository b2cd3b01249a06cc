"""The pacer (bot.pacing) on a real database (SQLite and PostgreSQL) with a clock the test moves: how it
waits, what it learns from OpenAI's answers, and that replicas share what it learned."""

from __future__ import annotations

import asyncio
import email.utils
import time

import openai
import pytest

from bot import pacing
from bot.openai_client import openai_client
from bot.pacing import Pacer, duration, no_sdk_retry_on_429, retry_after, stated_limits, try_again_in
from storage import Store, open_store
from storage.limits import Limits
from tests.clock import ManualClock
from tests.conftest import settings_for, wait_until
from tests.fakes.openai_api import FakeOpenAI, Fault
from tests.fakes.slack_api import FakeSlack

IPM_MESSAGE = ("Rate limit reached for gpt-image-2 in organization org-x on images per min (IPM): Limit 30, "
               "Used 30, Requested 1. Please try again in 1.8s. Visit https://platform.openai.com/account/rate-limits "
               "to learn more.")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _pacer(store: Store, clock: ManualClock, per_minute: int | None = None) -> Pacer:
    return Pacer(Limits(store.db), per_minute=per_minute, clock=clock)


async def _bucket(store: Store):
    return await Limits(store.db).bucket(pacing.BUCKET)


async def _waits_for(clock: ManualClock, take: asyncio.Task[int], seconds: float) -> int:
    """`take` waits for the clock until exactly `seconds` from now, and is granted then."""
    due = clock.now() + seconds
    await wait_until(lambda: clock.next_wake() is not None and abs(clock.next_wake() - due) < 1e-6,
                     what=f"the pacer to wait {seconds} s")
    assert not take.done()
    clock.advance_to(clock.next_wake())  # (`due` itself may round to a hair before it)
    return await asyncio.wait_for(take, 5)


async def test_a_known_limit_is_paced_evenly_at_90_percent(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock, per_minute=30)
    assert await pacer.take(5) == 1  # one at once (the bucket holds a second's worth, at least one)
    assert pacer.rate == 27.0
    assert await _waits_for(clock, asyncio.create_task(pacer.take(5)), 60 / 27) == 1
    assert pacer.ready() == 0
    clock.advance(60 / 27)
    assert pacer.ready() == 1 and await pacer.try_take(3) == 1 and await pacer.try_take(3) == 0


async def test_a_high_limit_lets_a_seconds_worth_go_at_once(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock, per_minute=6000)  # 5400 a minute: 90 a second
    assert await pacer.take(200) == 90
    await pacer.give_back(40)
    assert await pacer.try_take(200) == 40


async def test_an_unknown_limit_starts_at_tier_ones_and_doubles_while_requests_wait(
    store: Store, clock: ManualClock
) -> None:
    pacer = _pacer(store, clock)
    assert await pacer.take(1) == 1
    assert pacer.rate == pacing.START == 5.0
    await pacer.accepted({}, sent_at=clock.now())
    assert pacer.rate == 5.0  # nobody waits: the rate is not what holds requests back
    # a request comes and must wait: the one accepted just before proves the rate works, so it doubles
    assert await _waits_for(clock, asyncio.create_task(pacer.take(1)), 6.0) == 1
    assert pacer.rate == 10.0
    waiting = asyncio.create_task(pacer.take(1))
    await wait_until(lambda: clock.sleeping, what="the pacer to wait")
    await pacer.accepted({}, sent_at=clock.now())  # accepted while another request waits: double again
    assert pacer.rate == 20.0
    assert await _waits_for(clock, waiting, 3.0) == 1  # the wait already under way is paced at the new rate
    bucket = await _bucket(store)
    assert bucket.probing and bucket.rate == 20.0


async def test_no_growth_while_nothing_waits(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock)
    for _ in range(5):  # one request every 20 s, each at once: they say nothing about a faster rate
        assert await pacer.try_take(1) == 1
        await pacer.accepted({}, sent_at=clock.now())
        clock.advance(20.0)
    assert pacer.rate == 5.0


async def test_tokens_given_back_unused_say_nobody_waited(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock)
    await pacer.take(1)
    waiting = asyncio.create_task(pacer.take(1))
    await _waits_for(clock, waiting, 12.0)
    await pacer.give_back(1)  # the runner found no job for it
    await pacer.accepted({}, sent_at=clock.now())
    assert pacer.rate == 5.0


async def test_a_429_that_states_the_limit_sets_the_rate_under_it(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock, per_minute=60)  # the setting says 60; OpenAI says 30, and wins
    await pacer.take(1)
    sent = clock.now()
    assert await pacer.rejected({"retry-after-ms": "1800"}, code="rate_limit_exceeded", message=IPM_MESSAGE,
                                sent_at=sent)
    assert pacer.rate == 27.0
    bucket = await _bucket(store)
    assert (bucket.stated, bucket.rejected) == (30.0, 1)
    # nothing for the Retry-After, then the bucket refills from empty at the new rate
    assert await _waits_for(clock, asyncio.create_task(pacer.take(1)), 1.8 + 60 / 27) == 1
    # growth stops at the stated limit
    waiting = asyncio.create_task(pacer.take(1))
    await wait_until(lambda: clock.sleeping)
    await pacer.accepted({}, sent_at=clock.now())
    assert pacer.rate == 27.0
    waiting.cancel()


async def test_a_stated_limit_is_trusted_for_a_day(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock, per_minute=60)
    await pacer.take(1)
    await pacer.rejected({}, code="rate_limit_exceeded", message=IPM_MESSAGE, sent_at=clock.now())
    clock.advance(pacing.STATED_FOR + 1)
    assert await pacer.take(1) == 1
    waiting = asyncio.create_task(pacer.take(1))
    await wait_until(lambda: clock.sleeping)
    await pacer.accepted({}, sent_at=clock.now())
    assert pacer.rate == pytest.approx(27.0 * pacing.SLOW)  # may grow past it again, slowly
    waiting.cancel()


async def test_a_429_without_the_limit_halves_the_rate_once_for_the_requests_in_flight(
    store: Store, clock: ManualClock
) -> None:
    pacer = _pacer(store, clock, per_minute=60)  # 54 a minute
    sent = clock.now()
    for _ in range(3):  # three requests sent together all meet a 429
        assert await pacer.rejected({"retry-after": "2"}, code="rate_limit_exceeded",
                                    message="Rate limit reached. Please try again in 2s.", sent_at=sent)
    assert pacer.rate == 27.0
    clock.advance(1.0)
    await pacer.rejected({}, code="rate_limit_exceeded", message="", sent_at=clock.now())  # one sent after
    assert pacer.rate == 13.5
    assert (await _bucket(store)).rejected == 4


async def test_a_429_below_a_stated_limit_halves_the_rate(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock)  # 5 a minute, and OpenAI says the limit is 30: someone else uses it up
    await pacer.rejected({}, code="rate_limit_exceeded", message=IPM_MESSAGE, sent_at=clock.now())
    assert pacer.rate == 2.5


async def test_waiting_cannot_cure_an_exhausted_quota_or_a_limit_of_nothing(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock)
    assert not await pacer.rejected({}, code="insufficient_quota", message="You exceeded your current quota",
                                    sent_at=clock.now())
    dalle = ("Rate limit exceeded for images per minute in organization org-x. Limit: 0/1min. Current: 1/1min. "
             "Please visit https://platform.openai.com/docs/guides/rate-limits to learn how to increase it.")
    assert not await pacer.rejected({}, code="rate_limit_exceeded", message=dalle, sent_at=clock.now())


async def test_a_spent_request_limit_pauses_until_it_resets(store: Store, clock: ManualClock) -> None:
    pacer = _pacer(store, clock, per_minute=6000)
    await pacer.take(1)
    await pacer.accepted({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
                          "x-ratelimit-reset-requests": "2.5s"}, sent_at=clock.now())
    assert pacer.rate == 450.0  # each turn is a request: 90% of the request limit caps the images too
    assert pacer.ready() == 0
    take = asyncio.create_task(pacer.take(1))
    await wait_until(lambda: clock.sleeping)
    clock.advance(2.4)
    await asyncio.sleep(0)
    assert not take.done()
    clock.advance(1.0)
    assert await asyncio.wait_for(take, 5) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL
async def test_replicas_pace_by_what_one_of_them_learned(database_url: str, clock: ManualClock) -> None:
    first, second = await open_store(database_url), await open_store(database_url)
    try:
        a, b = _pacer(first, clock, per_minute=60), _pacer(second, clock)
        assert await a.take(1) == 1
        assert await b.try_take(1) == 0  # one bucket: the token is gone
        await a.rejected({}, code="rate_limit_exceeded", message=IPM_MESSAGE, sent_at=clock.now())
        # the other replica waits out the pause (the message's "try again in 1.8s") and paces at the new rate
        assert await _waits_for(clock, asyncio.create_task(b.take(1)), 1.8 + 60 / 27) == 1
        assert b.rate == 27.0
    finally:
        await first.close()
        await second.close()


async def test_a_setting_overrides_an_old_start_but_not_a_fresh_stated_limit(store: Store, clock: ManualClock) -> None:
    unknown = _pacer(store, clock)
    await unknown.take(1)
    configured = _pacer(store, clock, per_minute=100)
    await configured.try_take(1)
    assert configured.rate == 90.0 and (await _bucket(store)).rate == 90.0
    await unknown.rejected({}, code="rate_limit_exceeded", message=IPM_MESSAGE, sent_at=clock.now())
    restarted = _pacer(store, clock, per_minute=100)
    await restarted.try_take(1)
    assert restarted.rate == 27.0  # OpenAI said 30 an hour ago: that beats a setting of 100


# -- reading OpenAI's answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("6m0s", 360.0), ("59.1s", 59.1), ("17ms", 0.017),
                                               ("1h2m3s", 3723.0), ("2.5", 2.5), ("", None), ("soon", None)])
def test_reset_durations(text: str, seconds: float | None) -> None:
    assert duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_reads_milliseconds_first_then_seconds_then_a_date() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "2.5"}) == 2.5
    assert retry_after({}) is None
    assert retry_after({"retry-after": "later"}) is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after({"retry-after": when}) <= 30


def test_the_limits_openai_states_in_its_429s() -> None:
    assert stated_limits(IPM_MESSAGE) == (30.0, None)
    assert stated_limits("Rate limit exceeded for images per minute in organization org-x. Limit: 5/1min. "
                         "Current: 6/1min.") == (5.0, None)
    assert stated_limits("Rate limit reached for default-global-with-image-limits in organization org-x on "
                         "requests per min. Limit: 60.000000 / min. Current: 80.000000 / min.") == (None, 60.0)
    assert stated_limits("Rate limit reached for gpt-5.4 in organization org-x on tokens per min (TPM): Limit "
                         "30000, Used 29000, Requested 2000.") == (None, None)
    assert try_again_in(IPM_MESSAGE) == 1.8
    assert try_again_in("Please try again in 6m0s.") == 360.0
    assert try_again_in("no hint") is None


async def test_the_sdk_does_not_retry_a_429_on_starting_a_turn_but_keeps_its_other_retries(
    fake_slack: FakeSlack, fake_openai: FakeOpenAI, tmp_path
) -> None:
    settings = settings_for(fake_slack, fake_openai, f"sqlite:///{tmp_path / 'x.db'}", OPENAI_MAX_RETRIES="3")
    client = openai_client(settings)
    try:
        fake_openai.add_fault(Fault(status=429, code="rate_limit_exceeded", retry_after_ms=1))
        with pytest.raises(openai.RateLimitError) as info:
            await client.responses.create(model="gpt-5.4", input="a fox")
        assert info.value.response.headers["x-should-retry"] == "false"
        assert len(fake_openai.create_requests()) == 1
        fake_openai.add_fault(Fault(status=503, retry_after_ms=1))
        created = await client.responses.create(model="gpt-5.4", input="a fox")  # a 5xx is still retried
        assert len(fake_openai.create_requests()) == 3
        fake_openai.add_fault(Fault(status=429, code="rate_limit_exceeded", retry_after_ms=1, route="retrieve"))
        assert (await client.responses.retrieve(created.id)).id == created.id  # so is a 429 on a look-up
    finally:
        await client.close()


async def test_the_hook_leaves_other_answers_alone() -> None:
    class Answer:
        def __init__(self, status: int, method: str, path: str):
            self.status_code, self.headers = status, {}
            self.request = type("R", (), {"method": method, "url": type("U", (), {"path": path})()})()

    for answer in (Answer(429, "GET", "/v1/responses/resp_1"), Answer(500, "POST", "/v1/responses"),
                   Answer(429, "POST", "/v1/files")):
        await no_sdk_retry_on_429(answer)
        assert answer.headers == {}
    answer = Answer(429, "POST", "/v1/responses")
    await no_sdk_retry_on_429(answer)
    assert answer.headers == {"x-should-retry": "false"}
