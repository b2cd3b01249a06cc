"""Slack's rate limits as Easel keeps them (bot.slack_budget), on a real database (SQLite and PostgreSQL), with a
clock the test moves: what each priority may take, that waiting results are served as tokens come, that two
replicas share one budget, and that a 429 Slack sends all the same stops every replica until its Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.slack_budget import Priority, SlackBudget
from storage import Store, open_store
from storage.limits import Limits
from tests.clock import ManualClock
from tests.conftest import wait_until
from tests.fakes.slack_limits import Limit, RateLimiter

TEAM = "T0001"
MARGIN = 0.9  # the figures below are worked out at 90% of each tier


def _budget(store: Store, clock: ManualClock, **tiers: int) -> SlackBudget:
    return SlackBudget(Limits(store.db), tiers={k.replace("_", "."): v for k, v in tiers.items()}, clock=clock,
                       margin=MARGIN)


async def _admitted(budget: SlackBudget, method: str, priority: Priority, n: int, **kw: str) -> int:
    return sum([await budget.admit(TEAM, method, priority, **kw) for _ in range(n)])


async def test_cosmetic_calls_leave_room_for_results_and_never_wait(store: Store) -> None:
    clock = ManualClock()
    budget = _budget(store, clock, chat_update=50)  # 45 a minute kept: a full bucket holds 45
    cosmetic = await _admitted(budget, "chat.update", Priority.COSMETIC, 60)
    assert cosmetic == 6  # what leaves 85% of 45 (38.25) to the others; the rest were skipped at once
    assert budget.skipped == 60 - 6
    results = await _admitted(budget, "chat.update", Priority.RESULT, 39)
    assert results == 39  # every token left goes to results
    assert not await budget.admit(TEAM, "chat.update", Priority.COSMETIC)


async def test_a_result_waits_for_its_token_and_gets_it(store: Store) -> None:
    clock = ManualClock()
    budget = _budget(store, clock, chat_delete=20)  # 18 a minute: one token every 3.33 s
    assert await _admitted(budget, "chat.delete", Priority.RESULT, 18) == 18
    waiting = asyncio.create_task(budget.admit(TEAM, "chat.delete", Priority.RESULT))
    await wait_until(lambda: clock.sleeping == 1, what="the result to wait for a token")
    clock.advance(1.0)
    await asyncio.sleep(0)
    assert not waiting.done()
    for _ in range(10):
        when = clock.next_wake()
        if waiting.done() or when is None:
            break
        clock.advance_to(when)
        await asyncio.sleep(0.01)
    assert await asyncio.wait_for(waiting, 5) is True
    assert clock.now() - 1_000_000.0 >= 60 / (20 * MARGIN) - 1e-6  # not before the token was due


async def test_no_cosmetic_call_while_a_result_waits_for_the_method(store: Store) -> None:
    clock = ManualClock()
    budget = _budget(store, clock, files_getUploadURLExternal=20)  # 18 a minute
    assert await _admitted(budget, "files.getUploadURLExternal", Priority.RESULT, 18) == 18
    waiting = asyncio.create_task(budget.admit(TEAM, "files.getUploadURLExternal", Priority.RESULT))
    await wait_until(lambda: clock.sleeping == 1, what="the result to wait")
    clock.advance(60.0)  # the bucket is full again, but the result has not had its turn yet
    assert not await budget.admit(TEAM, "files.getUploadURLExternal", Priority.COSMETIC)
    assert await asyncio.wait_for(waiting, 5) is True


async def test_a_sign_waits_half_a_second_at_most_then_goes_without(store: Store) -> None:
    clock = ManualClock()
    budget = _budget(store, clock, reactions_add=10)  # 9 a minute: the next token is 6.7 s away
    assert await _admitted(budget, "reactions.add", Priority.SIGN, 9) == 9
    assert await budget.admit(TEAM, "reactions.add", Priority.SIGN) is False  # no sleep: it knew at once
    assert clock.sleeping == 0
    other = _budget(store, clock, chat_update=120)  # 108 a minute: a token every 0.56 s
    assert await _admitted(other, "chat.update", Priority.SIGN, 108) == 108
    assert await other.admit(TEAM, "chat.update", Priority.SIGN) is False  # 0.56 s away: past its half second
    clock.advance(0.2)
    waiting = asyncio.create_task(other.admit(TEAM, "chat.update", Priority.SIGN))  # 0.36 s away: it waits
    await wait_until(lambda: clock.sleeping == 1, what="the sign to wait for its token")
    clock.advance(0.4)
    assert await asyncio.wait_for(waiting, 5) is True


async def test_chat_post_message_counts_per_channel_too(store: Store) -> None:
    clock = ManualClock()
    budget = _budget(store, clock)
    assert await _admitted(budget, "chat.postMessage", Priority.SIGN, 2, channel="C1") == 2
    third = asyncio.create_task(budget.admit(TEAM, "chat.postMessage", Priority.SIGN, channel="C1"))
    await wait_until(lambda: clock.sleeping == 1, what="the third post in C1 to wait")  # about one a second
    assert await budget.admit(TEAM, "chat.postMessage", Priority.SIGN, channel="C2")  # another channel: its own
    clock.advance(1.0)
    assert await asyncio.wait_for(third, 5) is True


async def test_workspaces_have_budgets_of_their_own(store: Store) -> None:
    clock = ManualClock()
    budget = _budget(store, clock, chat_update=10)
    assert await _admitted(budget, "chat.update", Priority.RESULT, 9) == 9
    assert not await budget.admit(TEAM, "chat.update", Priority.COSMETIC)
    assert await budget.admit("T0002", "chat.update", Priority.COSMETIC)
    assert await budget.admit(None, "chat.update", Priority.COSMETIC)  # no workspace's work: not counted


async def test_two_replicas_share_one_budget(store: Store, database_url: str) -> None:
    clock = ManualClock()
    other = await open_store(database_url)
    try:
        first, second = _budget(store, clock, chat_update=50), _budget(other, clock, chat_update=50)
        granted = await asyncio.gather(*(b.admit(TEAM, "chat.update", Priority.COSMETIC)
                                         for _ in range(40) for b in (first, second)))
        assert sum(granted) == 6  # the two together take what one would: the bucket is the database's
        results = await asyncio.gather(*(b.admit(TEAM, "chat.update", Priority.SIGN)
                                         for _ in range(20) for b in (first, second)))
        # Never more than the rest of the bucket; at least one call for each grant (a spare token a batch left
        # in a process while others there found the bucket empty may go unused).
        assert 20 <= sum(results) <= 39
    finally:
        await other.close()


async def test_a_429_pauses_the_method_for_every_replica(store: Store, database_url: str) -> None:
    clock = ManualClock()
    other = await open_store(database_url)
    try:
        first, second = _budget(store, clock, files_delete=50), _budget(other, clock, files_delete=50)
        assert await first.admit(TEAM, "files.delete", Priority.COSMETIC)
        await first.limited(TEAM, "files.delete", 30.0)
        assert not await second.admit(TEAM, "files.delete", Priority.COSMETIC)
        assert not await second.admit(TEAM, "files.delete", Priority.SIGN)
        clock.advance(31.0)
        assert await second.admit(TEAM, "files.delete", Priority.COSMETIC)
    finally:
        await other.close()


@pytest.mark.parametrize("method", ["auth.test", "apps.connections.open"])
async def test_methods_without_a_published_limit_are_not_counted(store: Store, method: str) -> None:
    budget = _budget(store, ManualClock())
    assert all([await budget.admit(TEAM, method, Priority.COSMETIC) for _ in range(500)])


@pytest.mark.parametrize("priority", [Priority.SIGN, Priority.RESULT])
async def test_what_the_budget_admits_slacks_own_limiter_admits_too(store: Store, priority: Priority) -> None:
    """A few calls seconds apart (each batch leaves a spare token that expires unused), then a burst: every call
    admitted must find a token in the fake Slack's bucket for the method (the published tier, on the same
    clock). Spare tokens that expired may not come back to life and be spent on top of the bucket."""
    clock = ManualClock()
    budget = _budget(store, clock, reactions_add=50)  # 45 a minute kept, taken two at a time
    slack = RateLimiter({"reactions.add": Limit(50)}, clock=clock.now)
    refused = 0

    async def call() -> bool:
        nonlocal refused
        if not await budget.admit(TEAM, "reactions.add", priority, wait=False):
            return False
        refused += slack.admit(TEAM, "reactions.add") is not None
        return True

    for _ in range(8):  # the quiet start: one call every 5 s
        assert await call()
        clock.advance(5.0)
    admitted = sum([await call() for _ in range(100)])  # the burst
    assert refused == 0
    assert admitted >= 44  # the bucket's 45 (less what refilled meanwhile is more): the budget is not wasted
    clock.advance(30.0)
    admitted = sum([await call() for _ in range(100)])
    assert refused == 0 and admitted >= 22  # half a minute's worth


async def test_buckets_idle_for_an_hour_are_forgotten_and_made_again_full(store: Store) -> None:
    clock = ManualClock()
    budget = _budget(store, clock, chat_update=50)
    limits = Limits(store.db)
    assert await _admitted(budget, "chat.postMessage", Priority.RESULT, 2, channel="C1") == 2
    assert await _admitted(budget, "chat.update", Priority.RESULT, 45) == 45  # the bucket emptied
    await limits.ensure("openai:images", rate=5.0, tokens=5.0, now=clock.now(), probing=True)  # not Slack's
    clock.advance(600.0)
    await budget.limited(TEAM, "chat.update", 7200.0)  # paused for two hours: kept
    assert await budget.forget_idle(now=clock.now()) == 0  # nothing idle for an hour yet
    clock.advance(3600.0)
    assert await budget.forget_idle(now=clock.now()) == 2  # both of chat.postMessage's buckets
    assert await limits.bucket(f"slack:{TEAM}:chat.postMessage:C1") is None
    assert await limits.bucket(f"slack:{TEAM}:chat.update") is not None
    assert await limits.bucket("openai:images") is not None
    # The same process goes on using the forgotten bucket: it is made again, full.
    assert await _admitted(budget, "chat.postMessage", Priority.SIGN, 2, channel="C1") == 2
    clock.advance(3 * 3600.0)
    assert await budget.forget_idle(now=clock.now()) == 3  # the pause is over too


async def test_a_preview_takes_only_from_a_nearly_full_bucket_and_gives_back_what_it_did_not_use(
    store: Store,
) -> None:
    clock = ManualClock()
    budget = _budget(store, clock, files_getUploadURLExternal=100, files_completeUploadExternal=100)  # 90 kept
    previews = await _admitted(budget, "files.getUploadURLExternal", Priority.PREVIEW, 20)
    assert previews == 4  # what leaves 95% of 90 (85.5) to the others: a burst's results keep their uploads
    assert await _admitted(budget, "files.getUploadURLExternal", Priority.RESULT, 86) == 86
    limits = Limits(store.db)
    before = await limits.bucket(f"slack:{TEAM}:files.getUploadURLExternal")
    await budget.give_back(TEAM, "files.getUploadURLExternal")
    after = await limits.bucket(f"slack:{TEAM}:files.getUploadURLExternal")
    assert before is not None and after is not None and after.taken == before.taken - 1


async def test_calls_that_cannot_wait_for_a_dry_bucket_do_not_ask_the_database_again(store: Store) -> None:
    class Counting(Limits):
        takes = 0

        async def take(self, *args: Any, **kwargs: Any) -> Any:
            Counting.takes += 1
            return await super().take(*args, **kwargs)

    clock = ManualClock()
    budget = SlackBudget(Counting(store.db), tiers={"reactions.add": 10}, clock=clock, margin=MARGIN)  # 9 a minute
    assert await _admitted(budget, "reactions.add", Priority.SIGN, 9) == 9
    asked = Counting.takes
    assert await _admitted(budget, "reactions.add", Priority.SIGN, 50) == 0  # the next token is 6.7 s away
    assert Counting.takes == asked + 1  # the first found it dry; the others knew
    clock.advance(6.0)
    assert not await budget.admit(TEAM, "reactions.add", Priority.COSMETIC)
    assert Counting.takes == asked + 1
    clock.advance(1.0)  # the token is due: asked again, and granted
    assert await budget.admit(TEAM, "reactions.add", Priority.SIGN)
    assert Counting.takes == asked + 2
