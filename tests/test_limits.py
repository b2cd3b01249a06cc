"""The shared rate limiter's statements (storage.limits), on SQLite and PostgreSQL. Times are given, never
read from a clock: every figure below is exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from storage import Store, open_store
from storage.limits import Limits

BIG = 1e9  # no cap from the caller
ONE_SECOND = 1.0  # the bucket holds one second's worth of tokens (and at least one)


@pytest.fixture
async def limits(store: Store) -> Limits:
    return Limits(store.db)


async def _bucket(limits: Limits, rate: float, *, tokens: float | None = None, probing: bool = True) -> None:
    await limits.ensure("b", rate=rate, tokens=max(1.0, rate / 60) if tokens is None else tokens, now=0.0,
                        probing=probing)


async def _take(limits: Limits, want: int, now: float, cap: float = BIG) -> int:
    return (await limits.take("b", want=want, now=now, cap=cap, burst=ONE_SECOND)).granted


async def test_ensure_creates_once_and_keeps_what_is_there(limits: Limits) -> None:
    first = await limits.ensure("b", rate=5.0, tokens=1.0, now=10.0, probing=True)
    again = await limits.ensure("b", rate=99.0, tokens=7.0, now=20.0, probing=False)
    assert (first.rate, first.tokens, first.probing) == (5.0, 1.0, True)
    assert again == first
    assert await limits.bucket("b") == first
    assert await limits.bucket("other") is None


async def test_take_grants_what_the_bucket_holds_and_it_refills_evenly(limits: Limits) -> None:
    await _bucket(limits, 120.0)  # 2 a second, holding at most 2
    assert await _take(limits, 5, 0.0) == 2
    assert await _take(limits, 5, 0.0) == 0
    assert await _take(limits, 5, 0.25) == 0  # half a token
    assert await _take(limits, 5, 0.5) == 1
    assert await _take(limits, 1, 100.0) == 1  # idle for long: still at most 2 in the bucket
    assert await _take(limits, 5, 100.0) == 1
    bucket = await limits.bucket("b")
    assert bucket is not None and bucket.taken == 5 and bucket.tokens == 0.0


async def test_the_callers_cap_slows_the_refill(limits: Limits) -> None:
    await _bucket(limits, 600.0, tokens=0.0)
    assert await _take(limits, 100, 1.0, cap=60.0) == 1  # at 60 a minute the bucket holds at most one
    assert await _take(limits, 100, 1.5, cap=60.0) == 0
    assert await _take(limits, 100, 2.0, cap=60.0) == 1


async def test_a_token_exactly_due_is_granted_despite_rounding(limits: Limits) -> None:
    await _bucket(limits, 27.0, tokens=0.0)  # one every 2.222... s
    assert await _take(limits, 1, 60.0 / 27.0) == 1


async def test_give_back_returns_tokens_up_to_the_capacity(limits: Limits) -> None:
    await _bucket(limits, 120.0)
    assert await _take(limits, 2, 0.0) == 2
    await limits.give_back("b", count=1, now=0.0, cap=BIG, burst=ONE_SECOND)
    assert await _take(limits, 5, 0.0) == 1
    await limits.give_back("b", count=50, now=0.0, cap=BIG, burst=ONE_SECOND)
    assert await _take(limits, 50, 0.0) == 2


async def test_a_pause_grants_nothing_and_refills_nothing_until_it_ends(limits: Limits) -> None:
    await _bucket(limits, 60.0, tokens=0.0)
    await limits.pause("b", until=10.0)
    assert await _take(limits, 1, 5.0) == 0
    assert await _take(limits, 1, 10.0) == 0  # the pause is over, but nothing refilled during it
    assert await _take(limits, 1, 10.5) == 0
    assert await _take(limits, 1, 11.0) == 1
    await limits.pause("b", until=5.0)  # an earlier end does not shorten the pause (it is over already)
    assert await _take(limits, 1, 12.0) == 1


async def _cut(limits: Limits, *, stated: float | None, sent_at: float, now: float, until: float = 0.0):
    return await limits.cut("b", stated=stated, margin=0.9, factor=0.5, floor=1.0, sent_at=sent_at,
                            until=until, now=now, cap=BIG, burst=ONE_SECOND)


async def test_a_429_stating_a_lower_limit_sets_the_rate_under_it(limits: Limits) -> None:
    await _bucket(limits, 40.0)
    bucket = await _cut(limits, stated=30.0, sent_at=9.0, now=10.0, until=11.0)
    assert bucket.rate == pytest.approx(27.0)
    assert (bucket.stated, bucket.stated_at, bucket.probing, bucket.tokens) == (30.0, 10.0, False, 0.0)
    assert (bucket.paused_until, bucket.cut_at, bucket.rejected) == (11.0, 10.0, 1)
    assert await _take(limits, 1, 11.0 + 60 / 27 - 0.01) == 0
    assert await _take(limits, 1, 11.0 + 60 / 27) == 1


async def test_a_429_without_a_limit_halves_the_rate_once_per_overshoot(limits: Limits) -> None:
    await _bucket(limits, 40.0)
    first = await _cut(limits, stated=None, sent_at=9.0, now=10.0)
    assert first.rate == 20.0
    # more 429s for requests sent before that cut: the same overshoot, no second halving
    assert (await _cut(limits, stated=None, sent_at=9.5, now=10.1)).rate == 20.0
    assert (await _cut(limits, stated=None, sent_at=10.0, now=10.2)).rate == 20.0
    # a request sent after the cut still met a 429: the rate was still too high
    assert (await _cut(limits, stated=None, sent_at=10.5, now=11.0)).rate == 10.0
    bucket = await limits.bucket("b")
    assert bucket is not None and bucket.rejected == 4


async def test_halving_stops_at_the_floor_and_a_stated_limit_above_the_rate_halves(limits: Limits) -> None:
    await _bucket(limits, 1.5)
    assert (await _cut(limits, stated=None, sent_at=1.0, now=1.0)).rate == 1.0
    await limits.set_rate("b", rate=10.0, probing=False, now=2.0, cap=BIG, burst=ONE_SECOND)
    # OpenAI says 30, and we went at 10: the account's limit is shared with someone else: halve
    bucket = await _cut(limits, stated=30.0, sent_at=3.0, now=3.0)
    assert bucket.rate == 5.0 and bucket.stated == 30.0


async def _grow(limits: Limits, *, sent_at: float, now: float, target: float = 1000.0):
    return await limits.grow("b", target=target, fast=2.0, slow=1.05, sent_at=sent_at, now=now, cap=BIG,
                             burst=ONE_SECOND)


async def test_growth_doubles_while_probing_then_creeps_after_a_429(limits: Limits) -> None:
    await _bucket(limits, 5.0)
    assert (await _grow(limits, sent_at=0.0, now=0.0)).rate == 10.0
    assert (await _grow(limits, sent_at=0.0, now=0.0)).rate == 20.0
    assert (await _grow(limits, sent_at=0.0, now=0.0, target=30.0)).rate == 30.0  # not past the target
    assert await _grow(limits, sent_at=0.0, now=0.0, target=30.0) is None
    await _cut(limits, stated=None, sent_at=1.0, now=2.0)
    assert await _grow(limits, sent_at=1.5, now=2.5) is None  # sent before the cut: says nothing
    assert (await _grow(limits, sent_at=3.0, now=3.0)).rate == pytest.approx(15.75)


async def test_a_rate_change_counts_the_tokens_so_far_at_the_old_rate(limits: Limits) -> None:
    await _bucket(limits, 60.0, tokens=0.0)  # one a second, at most one held
    await limits.set_rate("b", rate=6.0, probing=False, now=0.5, cap=BIG, burst=ONE_SECOND)
    # half a token from the first half second at 60 a minute; the other half takes 5 s at 6 a minute
    assert await _take(limits, 1, 5.4) == 0
    assert await _take(limits, 1, 5.5) == 1


@pytest.fixture
async def two_replicas(database_url: str) -> AsyncIterator[tuple[Limits, Limits]]:
    a, b = await open_store(database_url), await open_store(database_url)
    try:
        yield Limits(a.db), Limits(b.db)
    finally:
        await a.close()
        await b.close()


async def test_many_takers_on_two_replicas_never_take_more_than_the_bucket_holds(
    two_replicas: tuple[Limits, Limits],
) -> None:
    """60 tasks on each of two stores (two replicas) take from one bucket at once, step after step: all
    together they get exactly what the bucket holds, never a token more."""
    first, second = two_replicas
    await first.ensure("b", rate=600.0, tokens=10.0, now=0.0, probing=False)  # 10 a second, at most 10 held
    granted_in_all, due_in_all = 0, 10
    for step in range(6):
        now = step * 0.5  # each step refills 5 tokens

        async def taker(limits: Limits, want: int, now: float = now) -> int:
            return (await limits.take("b", want=want, now=now, cap=BIG, burst=ONE_SECOND)).granted

        grants = await asyncio.gather(*(taker(first if i % 2 else second, 1 + i % 3) for i in range(120)))
        if step:
            due_in_all += 5
        granted_in_all += sum(grants)
        assert granted_in_all == due_in_all, f"step {step}: {granted_in_all} granted, {due_in_all} due"
    bucket = await second.bucket("b")
    assert bucket is not None and bucket.taken == due_in_all and bucket.tokens == pytest.approx(0.0)
