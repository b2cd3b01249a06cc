"""The fake Slack's rate limits (opt-in): Slack's published tiers as token buckets per (workspace, method), a
429 `ratelimited` with `Retry-After` beyond them, chat.postMessage per channel and per workspace; driven by the
real slack_sdk client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.clock import ManualClock
from tests.fakes.slack_api import RATE_LIMITS, WORKSPACE_POSTS, FakeSlack, Limit, SlackObserver
from tests.fakes.slack_limits import TIER_2, TIER_3, TIER_4, RateLimiter

TOKEN = "xoxb-test-token"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeSlack]:
    async with FakeSlack(rate_limits=True, clock=clock.now) as f:
        yield f


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=fake.api_url, retry_handlers=[])  # each call is one request


async def _refused(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as err:
        await call
    return err.value


def _is_ratelimited(err: SlackApiError, retry_after: int) -> None:
    assert err.response.status_code == 429
    assert err.response.data == {"ok": False, "error": "ratelimited"}
    assert err.response.headers["Retry-After"] == str(retry_after)


# --------------------------------------------------------------------------- the table


def test_the_table_is_slacks_published_tiers() -> None:
    assert (TIER_2.per_minute, TIER_3.per_minute, TIER_4.per_minute) == (20, 50, 100)
    tiers = {20: "T2", 50: "T3", 100: "T4"}
    by_tier = {m: tiers[limit.per_minute] for m, limit in RATE_LIMITS.items()
               if m not in ("chat.postMessage", WORKSPACE_POSTS)}
    assert by_tier == {
        "reactions.add": "T3", "reactions.remove": "T2", "chat.update": "T3", "chat.delete": "T3",
        "chat.postEphemeral": "T4", "files.getUploadURLExternal": "T4", "files.completeUploadExternal": "T4",
        "files.info": "T4", "files.delete": "T3", "conversations.replies": "T3", "conversations.history": "T3",
        "users.info": "T4", "views.open": "T4", "views.publish": "T4", "views.update": "T4",
        "usergroups.users.list": "T2", "usergroups.list": "T2", "chat.getPermalink": "T4",
    }
    assert all(limit.capacity == limit.per_minute for m, limit in RATE_LIMITS.items() if m != "chat.postMessage")
    assert RATE_LIMITS["chat.postMessage"] == Limit(60, burst=3)
    assert RATE_LIMITS[WORKSPACE_POSTS] == Limit(600)
    assert "auth.test" not in RATE_LIMITS and "apps.connections.open" not in RATE_LIMITS


async def test_off_by_default() -> None:
    async with FakeSlack() as fake:
        client = AsyncWebClient(token=TOKEN, base_url=fake.api_url, retry_handlers=[])
        for n in range(60):  # beyond Tier 3 within a second
            await client.reactions_add(channel="C1", timestamp=f"1.{n}", name="eyes")
        assert fake.rate_limited == [] and fake.limiter is None


# --------------------------------------------------------------------------- a method's bucket


async def test_a_tier_3_method_takes_50_then_429s_until_a_token_is_back(
    fake: FakeSlack, client: AsyncWebClient, clock: ManualClock
) -> None:
    for n in range(50):
        await client.reactions_add(channel="C1", timestamp=f"1.{n}", name="eyes")
    err = await _refused(client.reactions_add(channel="C1", timestamp="2.0", name="eyes"))
    _is_ratelimited(err, 2)  # a token every 1.2 s: 2 whole seconds
    assert ("C1", "2.0") not in fake.reactions  # the method did not run
    assert [c.method for c in fake.rate_limited] == ["reactions.add"]
    assert fake.rate_limited[0].args["timestamp"] == "2.0"
    assert fake.rate_limited_counts() == {"reactions.add": 1}
    assert len(fake.calls_to("reactions.add")) == 51  # Slack received it all the same

    clock.advance(1.0)
    _is_ratelimited(await _refused(client.reactions_add(channel="C1", timestamp="2.0", name="eyes")), 1)
    clock.advance(0.2)  # 1.2 s since the bucket was empty: one token, the refused calls took none
    await client.reactions_add(channel="C1", timestamp="2.0", name="eyes")
    _is_ratelimited(await _refused(client.reactions_add(channel="C1", timestamp="3.0", name="eyes")), 2)
    assert fake.rate_limited_counts() == {"reactions.add": 3}

    clock.advance(600)  # refills to the burst, no further
    for n in range(50):
        await client.reactions_add(channel="C1", timestamp=f"4.{n}", name="eyes")
    await _refused(client.reactions_add(channel="C1", timestamp="5.0", name="eyes"))


async def test_a_call_that_fails_still_counts(fake: FakeSlack, client: AsyncWebClient) -> None:
    """Slack counts requests, not successes: a T3 method asked for a message that is not there uses its bucket up."""
    for _ in range(50):
        err = await _refused(client.chat_delete(channel="C1", ts="1.000001"))
        assert err.response["error"] == "message_not_found"
    _is_ratelimited(await _refused(client.chat_delete(channel="C1", ts="1.000001")), 2)  # a token every 1.2 s
    assert fake.rate_limited_counts() == {"chat.delete": 1}


async def test_a_bad_token_or_a_scripted_fault_takes_no_token(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.set_rate_limits({"files.info": 1})
    stranger = AsyncWebClient(token="xoxb-unknown", base_url=fake.api_url, retry_handlers=[])
    assert (await _refused(stranger.files_info(file="F1"))).response["error"] == "invalid_auth"
    fake.add_fault("files.info", status=500, error="internal_error")
    assert (await _refused(client.files_info(file="F1"))).response.status_code == 500
    assert (await _refused(client.files_info(file="F1"))).response["error"] == "file_not_found"  # the token
    _is_ratelimited(await _refused(client.files_info(file="F1")), 60)


async def test_methods_left_out_are_not_limited(fake: FakeSlack, client: AsyncWebClient) -> None:
    for _ in range(120):
        await client.auth_test()
    assert fake.rate_limited == []


async def test_tier_4_and_the_upload_methods(fake: FakeSlack, client: AsyncWebClient, clock: ManualClock) -> None:
    for _ in range(100):
        await client.files_getUploadURLExternal(filename="a.png", length=3)
    _is_ratelimited(await _refused(client.files_getUploadURLExternal(filename="a.png", length=3)), 1)  # 0.6 s
    clock.advance(0.6)
    await client.files_getUploadURLExternal(filename="a.png", length=3)
    assert fake.rate_limited_counts() == {"files.getUploadURLExternal": 1}


# --------------------------------------------------------------------------- workspaces


async def test_each_workspace_has_its_own_buckets(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.set_rate_limits({"chat.update": 2})
    code = fake.add_workspace(team_id="T0002", team="Other", bot_token="xoxb-other")
    await AsyncWebClient(base_url=fake.api_url).oauth_v2_access(client_id=fake.client_id,
                                                                client_secret=fake.client_secret, code=code)
    other = AsyncWebClient(token="xoxb-other", base_url=fake.api_url, retry_handlers=[])
    assert fake.workspace_of("xoxb-other") == "T0002" and fake.workspace_of(TOKEN) == fake.team_id
    for _ in range(2):
        await _refused(client.chat_update(channel="C1", ts="1.0", text="x"))  # message_not_found, counted
    _is_ratelimited(await _refused(client.chat_update(channel="C1", ts="1.0", text="x")), 30)
    for _ in range(2):
        assert (await _refused(other.chat_update(channel="C1", ts="1.0", text="x"))).response.status_code == 200
    _is_ratelimited(await _refused(other.chat_update(channel="C1", ts="1.0", text="x")), 30)
    assert fake.rate_limited_counts() == {"chat.update": 2}
    assert [fake.token_of(c) for c in fake.rate_limited] == [TOKEN, "xoxb-other"]


# --------------------------------------------------------------------------- chat.postMessage


async def test_post_message_about_one_a_second_per_channel_with_a_burst_of_3(
    fake: FakeSlack, client: AsyncWebClient, clock: ManualClock
) -> None:
    for n in range(3):
        await client.chat_postMessage(channel="C1", text=f"hi {n}")
    _is_ratelimited(await _refused(client.chat_postMessage(channel="C1", text="too fast")), 1)
    for n in range(3):  # another channel has its own bucket
        await client.chat_postMessage(channel="C2", text=f"hi {n}")
    clock.advance(1.0)
    await client.chat_postMessage(channel="C1", text="a second later")
    await _refused(client.chat_postMessage(channel="C1", text="too fast again"))
    assert [m["text"] for m in fake.messages if m["channel"] == "C1"] == ["hi 0", "hi 1", "hi 2", "a second later"]
    assert fake.rate_limited_counts() == {"chat.postMessage": 2}


async def test_post_message_has_a_workspace_wide_cap(fake: FakeSlack, client: AsyncWebClient,
                                                     clock: ManualClock) -> None:
    for n in range(600):  # 600 channels, 1 message each: the workspace's burst
        await client.chat_postMessage(channel=f"C{n}", text="hi")
    _is_ratelimited(await _refused(client.chat_postMessage(channel="CNEW", text="hi")), 1)  # 0.1 s
    clock.advance(0.1)
    await client.chat_postMessage(channel="CNEW", text="hi")


async def test_a_post_refused_by_its_channel_takes_no_workspace_token(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.set_rate_limits({"chat.postMessage": Limit(6, burst=1), WORKSPACE_POSTS: Limit(60, burst=2)})
    await client.chat_postMessage(channel="C1", text="hi")
    for _ in range(3):
        _is_ratelimited(await _refused(client.chat_postMessage(channel="C1", text="again")), 10)
    await client.chat_postMessage(channel="C2", text="hi")  # the workspace's second token is still there
    _is_ratelimited(await _refused(client.chat_postMessage(channel="C3", text="hi")), 1)  # the workspace's


def test_a_post_refused_by_the_workspace_takes_no_channel_token(clock: ManualClock) -> None:
    limiter = RateLimiter({"chat.postMessage": Limit(60, burst=2), WORKSPACE_POSTS: Limit(60, burst=1)}, clock.now)
    assert limiter.admit("T1", "chat.postMessage", "C1") is None
    assert limiter.admit("T1", "chat.postMessage", "C1") == 1  # the workspace's bucket is empty
    clock.advance(1.0)
    assert limiter.admit("T1", "chat.postMessage", "C1") is None  # C1 still had its second token
    clock.advance(1.0)
    assert limiter.admit("T1", "chat.postMessage", "C1") is None  # refilled at 1 a second
    assert limiter.admit("T1", "chat.postMessage", "C2") == 1


# --------------------------------------------------------------------------- overrides, switching, observers


async def test_overrides_change_add_and_remove_limits(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.set_rate_limits({"users.info": 1, "assistant.threads.setStatus": 2, "reactions.add": None})
    await client.users_info(user="U1")
    _is_ratelimited(await _refused(client.users_info(user="U1")), 60)
    for _ in range(2):
        await client.assistant_threads_setStatus(channel_id="C1", thread_ts="1.0", status="working")
    await _refused(client.assistant_threads_setStatus(channel_id="C1", thread_ts="1.0", status="working"))
    for n in range(60):
        await client.reactions_add(channel="C1", timestamp=f"1.{n}", name="eyes")
    fake.set_rate_limits(False)
    for _ in range(3):
        await client.users_info(user="U1")
    fake.set_rate_limits()  # on again, every bucket full
    await client.users_info(user="U1")
    assert fake.rate_limited_counts() == {"users.info": 1, "assistant.threads.setStatus": 1}
    with pytest.raises(ValueError, match="users.info"):
        fake.set_rate_limits({"users.info": 0})


async def test_the_observer_hears_of_each_429(clock: ManualClock) -> None:
    heard: list[tuple[str, int]] = []

    class Log(SlackObserver):
        def rate_limited(self, method: str, args: Mapping[str, Any], retry_after: int) -> None:
            heard.append((method, retry_after))

    async with FakeSlack(rate_limits={"chat.delete": 2}, clock=clock.now, observer=Log()) as fake:
        client = AsyncWebClient(token=TOKEN, base_url=fake.api_url, retry_handlers=[])
        for _ in range(3):
            await _refused(client.chat_delete(channel="C1", ts="1.0"))
    assert heard == [("chat.delete", 30)]


async def test_the_sdks_rate_limit_handler_waits_retry_after_and_gets_through() -> None:
    async with FakeSlack(rate_limits={"files.info": Limit(60, burst=1)}) as fake:  # the real clock
        client = AsyncWebClient(token=TOKEN, base_url=fake.api_url,
                                retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
        await _refused(client.files_info(file="F1"))  # file_not_found, its token taken
        err = await _refused(client.files_info(file="F1"))
        # the retry got through: with a bucket of one that refills once a second, it waited for Retry-After
        assert err.response["error"] == "file_not_found"
        assert fake.rate_limited_counts() == {"files.info": 1}
        assert len(fake.calls_to("files.info")) == 3
