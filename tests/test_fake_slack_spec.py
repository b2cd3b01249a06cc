"""The fake Slack holds calls to Slack's published Web API spec and to the app's scopes, as Slack does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import yaml
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.conftest import Running
from tests.fakes.slack_api import _MANIFEST, _SPEC, DEFAULT_SCOPES, FakeSlack


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(scopes=[s for s in DEFAULT_SCOPES if s != "reactions:write"]) as f:
        yield f


def test_the_default_token_has_the_manifests_scopes() -> None:
    assert set(DEFAULT_SCOPES) == set(yaml.safe_load(_MANIFEST.read_text())["oauth_config"]["scopes"]["bot"])


async def test_a_method_without_its_scope_is_missing_scope_with_needed_and_provided(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    with pytest.raises(SlackApiError) as caught:
        await client.reactions_add(channel="C1", timestamp="1.2", name="eyes")
    data = caught.value.response.data
    assert (data["error"], data["needed"]) == ("missing_scope", "reactions:write")
    assert set(data["provided"].split(",")) == set(fake.scopes)
    ok = await client.chat_postMessage(channel="C1", text="hi")  # chat:write:bot in the spec: today's chat:write
    assert ok["ok"]


async def test_history_needs_the_scope_of_the_conversations_kind() -> None:
    async with FakeSlack(scopes=["channels:history", "chat:write"]) as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        fake.add_message("C1", "hello")
        assert (await client.conversations_history(channel="C1"))["ok"]
        with pytest.raises(SlackApiError) as caught:
            await client.conversations_history(channel="D1")
        assert caught.value.response["needed"] == "im:history"


async def test_unknown_methods_and_arguments_slack_would_not_read(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    with pytest.raises(SlackApiError) as caught:
        await client.api_call("chat.postMesage", json={"channel": "C1", "text": "hi"})
    assert caught.value.response["error"] == "unknown_method"
    # files.info reads no JSON body: its file argument is not seen, as on Slack.
    with pytest.raises(SlackApiError) as caught:
        await client.api_call("files.info", json={"file": "F1"})
    assert caught.value.response["error"] == "file_not_found"
    await client.chat_postMessage(channel="C1", text="hi", thread_tss="1.2")
    assert ("chat.postMessage", "thread_tss") in fake.unknown_arguments


async def test_a_download_without_files_read_gets_the_login_page() -> None:
    async with FakeSlack(scopes=["chat:write"]) as fake:
        f = fake.add_file(b"\x89PNG\r\n\x1a\n", name="a.png")
        async with aiohttp.ClientSession() as session, session.get(
            f["url_private_download"], headers={"Authorization": f"Bearer {fake.bot_token}"}
        ) as r:
            assert r.content_type == "text/html"


async def test_a_request_line_over_8_kb_is_a_414_page(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    with pytest.raises(SlackApiError) as caught:
        await client.files_completeUploadExternal(files=[{"id": "F1", "title": "a"}], channel_id="C1",
                                                  initial_comment="ü" * 1500)
    assert caught.value.response.status_code == 414
    assert caught.value.response.data == "414 Request-URI Too Large"  # text, not Slack's JSON
    assert fake.calls_to("files.completeUploadExternal") == [] and len(fake.refused) == 1


async def test_easel_calls_only_what_slack_reads(easel: Running) -> None:
    """Every method Easel calls exists, and every argument it sends is one Slack reads."""
    f = easel.slack.add_file(b"", name="x.png")
    await easel.sender.mention("a fox")
    await easel.sender.command("a hen --quality bogus")
    await easel.sender.command("a cat")
    await easel.sender.mention("edit this", files=[f], channel="C0002")
    await easel.jobs_settled(3, timeout=30)
    assert easel.slack.unknown_arguments == []
    methods = {c.method for c in easel.slack.calls} - {"upload", "download", "response_url"}
    assert methods <= set(_SPEC), methods


async def test_easel_without_files_read_says_so_and_without_reactions_write_still_draws(easel: Running) -> None:
    easel.slack.scopes.remove("files:read")
    easel.slack.scopes.remove("reactions:write")
    f = easel.slack.add_file(b"\x89PNG\r\n\x1a\n", name="a.png")
    ts, _ = await easel.sender.mention("edit this", files=[f])
    await easel.sender.mention("a fox", channel="C0002")
    await easel.slack.wait_for("files.completeUploadExternal")
    await easel.jobs_settled(2)
    said = [m["text"] for m in easel.slack.thread("C0001", ts) if m.get("text")]
    assert any("files:read" in t for t in said), said
    assert all(not names for names in easel.slack.reactions.values())  # each reactions.add: missing_scope
    assert easel.slack.calls_to("reactions.add")
