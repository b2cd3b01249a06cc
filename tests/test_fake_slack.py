"""Prove the Slack fakes against the real slack_sdk client and a real slack_bolt AsyncApp."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

try:
    from tests.fakes.slack_api import FakeSlack
    from tests.fakes.slack_requests import SlackSender
except ModuleNotFoundError:  # rootdir not on sys.path (no tests/__init__.py, no pythonpath setting)
    from fakes.slack_api import FakeSlack  # type: ignore[no-redef]
    from fakes.slack_requests import SlackSender  # type: ignore[no-redef]

TOKEN = "xoxb-test-token"
SECRET = "s3cret"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "SLACK_CLIENT_ID",
        "SLACK_CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as f:
        yield f


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=fake.api_url)


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as resp:
        return resp.status, resp.content_type, await resp.read()


# ---------------------------------------------------------------------------------------------- Web API


async def test_auth_test_and_invalid_auth(fake: FakeSlack, client: AsyncWebClient) -> None:
    resp = await client.auth_test()
    assert resp["user_id"] == "UBOT" and resp["bot_id"] == "BBOT" and resp["team_id"] == "T0001"
    assert "chat:write" in resp.headers["x-oauth-scopes"].split(",")

    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"

    ok = await AsyncWebClient(token="xapp-1-abc", base_url=fake.api_url).apps_connections_open(
        app_token="xapp-1-abc"
    )
    assert ok["url"].startswith("ws://127.0.0.1")
    with pytest.raises(SlackApiError):
        await client.apps_connections_open(app_token=TOKEN)


async def test_post_update_delete_and_thread(fake: FakeSlack, client: AsyncWebClient) -> None:
    root = fake.add_message("C1", "<@UBOT> draw a cat", user="U1")
    first = await client.chat_postMessage(channel="C1", text="working…", thread_ts=root["ts"])
    second = await client.chat_postMessage(
        channel="C1",
        text="done",
        thread_ts=root["ts"],
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "done"}}],
    )
    assert first["message"]["thread_ts"] == root["ts"] and first["message"]["user"] == "UBOT"
    assert float(root["ts"]) < float(first["ts"]) < float(second["ts"])
    assert len(first["ts"].split(".")[1]) == 6

    await client.chat_update(channel="C1", ts=first["ts"], text="step 2")
    assert [m["text"] for m in fake.messages] == ["step 2", "done"]
    assert fake.messages[1]["blocks"][0]["type"] == "section"
    assert [m["ts"] for m in fake.thread("C1", root["ts"])] == [root["ts"], first["ts"], second["ts"]]

    replies = await client.conversations_replies(channel="C1", ts=root["ts"])
    assert [m["text"] for m in replies["messages"]] == ["<@UBOT> draw a cat", "step 2", "done"]
    assert replies["has_more"] is False

    eph = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert eph["message_ts"] and fake.ephemerals[0]["ephemeral_user"] == "U1"

    await client.chat_delete(channel="C1", ts=second["ts"])
    assert [m["ts"] for m in fake.messages] == [first["ts"]]
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C1", ts=second["ts"], text="x")
    assert err.value.response["error"] == "message_not_found"


async def test_post_message_errors(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text="x" * 40_001)
    assert err.value.response["error"] == "msg_too_long"
    # slack_sdk itself warns (UserWarning) on empty text; filterwarnings=error would make that a failure
    with pytest.warns(UserWarning, match="top-level `text`"), pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text="")
    assert err.value.response["error"] == "no_text"
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="", text="hi")
    assert err.value.response["error"] == "channel_not_found"


async def test_reactions(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.reactions_add(channel="C1", timestamp="1.000001", name="eyes")
    await client.reactions_add(channel="C1", timestamp="1.000001", name="hourglass")
    with pytest.raises(SlackApiError) as err:
        await client.reactions_add(channel="C1", timestamp="1.000001", name="eyes")
    assert err.value.response["error"] == "already_reacted"
    await client.reactions_remove(channel="C1", timestamp="1.000001", name="eyes")
    assert fake.reactions[("C1", "1.000001")] == {"hourglass"}
    with pytest.raises(SlackApiError) as err:
        await client.reactions_remove(channel="C1", timestamp="1.000001", name="eyes")
    assert err.value.response["error"] == "no_reaction"
    assert fake.calls_to("reactions.add")[0].args == {
        "channel": "C1",
        "timestamp": "1.000001",
        "name": "eyes",
    }


async def test_files_upload_v2(fake: FakeSlack, client: AsyncWebClient) -> None:
    resp = await client.files_upload_v2(
        content=PNG, filename="a.png", channel="C1", thread_ts="1700000000.000100", initial_comment="here"
    )
    file_id = resp["file"]["id"]
    assert [c.method for c in fake.calls] == [
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    assert fake.calls[0].args["length"] == str(len(PNG))
    assert "Authorization" not in fake.calls[1].headers
    assert fake.uploads[file_id] == PNG
    [shared] = fake.shared_files
    assert shared["bytes"] == PNG and shared["file_id"] == file_id and shared["filename"] == "a.png"
    assert shared["channel_id"] == "C1" and shared["thread_ts"] == "1700000000.000100"
    assert shared["initial_comment"] == "here"
    [share] = fake.thread("C1", "1700000000.000100")
    assert share["files"][0]["id"] == file_id and share["text"] == "here"

    info = await client.files_info(file=file_id)
    assert info["file"]["shares"]["public"]["C1"][0]["thread_ts"] == "1700000000.000100"
    status, ctype, body = await _get(
        info["file"]["url_private_download"], {"Authorization": f"Bearer {TOKEN}"}
    )
    assert (status, ctype, body) == (200, "image/png", PNG)


async def test_complete_upload_requires_uploaded_bytes(fake: FakeSlack, client: AsyncWebClient) -> None:
    url = await client.files_getUploadURLExternal(filename="b.png", length=3)
    with pytest.raises(SlackApiError) as err:
        await client.files_completeUploadExternal(
            files=[{"id": url["file_id"], "title": "b"}], channel_id="C1"
        )
    assert err.value.response["error"] == "file_not_found"

    async with aiohttp.ClientSession() as session:
        async with session.post(url["upload_url"], data=b"toolong") as resp:
            assert resp.status == 400
        async with session.post(url["upload_url"], data=b"abc") as resp:
            assert resp.status == 200 and await resp.text() == "OK - 3"
    done = await client.files_completeUploadExternal(
        files=[{"id": url["file_id"], "title": "b"}], channel_id="C1"
    )
    assert isinstance(done["files"], list) and done["files"][0]["title"] == "b"

    with pytest.raises(SlackApiError) as err:
        await client.files_getUploadURLExternal(filename="c.png", length=0)
    assert err.value.response["error"] == "invalid_arguments"


async def test_rate_limit_retried_with_handler(fake: FakeSlack, client: AsyncWebClient) -> None:
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    fake.add_fault("chat.postMessage", retry_after=0)
    resp = await client.chat_postMessage(channel="C1", text="hi")
    assert resp["ok"] and len(fake.calls_to("chat.postMessage")) == 2
    assert len(fake.messages) == 1


async def test_rate_limit_without_handler_raises(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_fault("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text="hi")
    assert err.value.response.status_code == 429
    assert err.value.response["error"] == "ratelimited"
    assert err.value.response.headers["Retry-After"] == "7"

    fake.add_fault("reactions.add", status=200, error="channel_not_found", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            await client.reactions_add(channel="C1", timestamp="1.0", name="eyes")
        assert err.value.response.status_code == 200
        assert err.value.response["error"] == "channel_not_found"
    await client.reactions_add(channel="C1", timestamp="1.0", name="eyes")


async def test_upload_fault_makes_upload_v2_raise(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_fault("upload", status=500, error="boom")
    with pytest.raises(SlackRequestError, match="status: 500"):
        await client.files_upload_v2(content=b"xyz", filename="a.png", channel="C1")
    assert fake.calls_to("files.completeUploadExternal") == [] and fake.shared_files == []


async def test_downloads(fake: FakeSlack) -> None:
    obj = fake.add_file(PNG, name="in.png")
    assert obj["size"] == len(PNG) and obj["mimetype"] == "image/png" and obj["filetype"] == "png"
    assert obj["url_private"] == f"{fake.url}/files-pri/T0001-{obj['id']}/in.png"

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert await _get(obj["url_private_download"], auth) == (200, "image/png", PNG)
    status, ctype, body = await _get(obj["url_private_download"])
    assert (status, ctype) == (200, "text/html") and b"<html" in body
    status, ctype, _ = await _get(obj["url_private"], {"Authorization": "Bearer xoxb-nope"})
    assert ctype == "text/html"

    html = fake.add_file(b"x", name="h.png", serve_html=True)
    assert (await _get(html["url_private"], {"Authorization": f"Bearer {TOKEN}"}))[1] == "text/html"

    fake.add_fault("download", status=503)
    assert (await _get(obj["url_private"], {"Authorization": f"Bearer {TOKEN}"}))[0] == 503
    downloads = fake.calls_to("download")
    assert len(downloads) == 5 and downloads[0].args["file_id"] == obj["id"]

    info = await AsyncWebClient(token=TOKEN, base_url=fake.api_url).files_info(file=obj["id"])
    assert info["file"]["url_private_download"] == obj["url_private_download"]


async def test_response_url_and_wait_for_timeout(fake: FakeSlack) -> None:
    body = {"text": "hi", "replace_original": True}
    async with aiohttp.ClientSession() as session, session.post(fake.response_url("k9"), json=body) as resp:
        assert resp.status == 200
    [call] = await fake.wait_for("response_url")
    assert call.args == {"text": "hi", "replace_original": True} and call.path.endswith("/k9")

    started = time.monotonic()
    with pytest.raises(AssertionError, match="chat.postMessage"):
        await fake.wait_for("chat.postMessage", timeout=0.05)
    assert time.monotonic() - started < 5  # its own timeout, not the default 10 s


# ---------------------------------------------------------------------------------------------- Bolt + sender


@dataclass
class BoltRig:
    app: AsyncApp
    sender: SlackSender
    mentions: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    got_mention: asyncio.Event = field(default_factory=asyncio.Event)
    got_message: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def rig(fake: FakeSlack) -> AsyncIterator[BoltRig]:
    app = AsyncApp(client=AsyncWebClient(token=TOKEN, base_url=fake.api_url), signing_secret=SECRET)
    runner = web.AppRunner(app.web_app(path="/slack/events"), shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    sender = SlackSender(url=f"http://127.0.0.1:{port}/slack/events", signing_secret=SECRET)
    r = BoltRig(app=app, sender=sender)

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        r.mentions.append(event)
        await say(text="on it", thread_ts=event.get("thread_ts") or event["ts"])
        r.got_mention.set()

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        r.messages.append(event)
        r.got_message.set()

    @app.command("/imagine")
    async def on_imagine(ack: Any, command: dict[str, Any]) -> None:
        await ack(f"Queued: {command['text']}")

    @app.action("regen")
    async def on_regen(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        r.actions.append(body)

    try:
        yield r
    finally:
        await sender.close()
        await runner.cleanup()


async def test_mention_reaches_listener(fake: FakeSlack, rig: BoltRig) -> None:
    img = fake.add_file(PNG)
    ts, result = await rig.sender.mention("draw a fox", files=[img])
    assert result.status == 200
    await asyncio.wait_for(rig.got_mention.wait(), 5)
    [event] = rig.mentions
    assert (
        event["text"] == "<@UBOT> draw a fox" and event["ts"] == ts and event["files"][0]["id"] == img["id"]
    )
    [post] = await fake.wait_for("chat.postMessage")
    assert post.args["thread_ts"] == ts and post.args["channel"] == "C0001"
    assert len(fake.calls_to("auth.test")) == 1

    ts2, _ = await rig.sender.mention("again", thread_ts=ts, retry_num=1)
    assert float(ts2) > float(ts)
    await fake.wait_for("chat.postMessage", count=2)
    assert rig.mentions[1]["thread_ts"] == ts
    assert len(fake.calls_to("auth.test")) == 1


async def test_message_file_share_and_self_events(fake: FakeSlack, rig: BoltRig) -> None:
    _, own = await rig.sender.message("from the bot", user="UBOT", bot_id="BBOT")
    assert own.status == 200
    _, result = await rig.sender.message("", files=[fake.add_file(PNG)], thread_ts="1700000000.000100")
    assert result.status == 200
    await asyncio.wait_for(rig.got_message.wait(), 5)
    [event] = rig.messages  # the bot's own message was dropped by bolt
    assert event["subtype"] == "file_share" and event["thread_ts"] == "1700000000.000100"


async def test_command_ack_and_action(fake: FakeSlack, rig: BoltRig) -> None:
    result = await rig.sender.command("a red balloon")
    assert result.status == 200 and "Queued: a red balloon" in result.body_text

    payload = rig.sender.block_actions_payload("regen", value="job-1", message_ts="1700000000.000200")
    result = await rig.sender.action(payload)
    assert result.status == 200
    assert rig.actions[0]["actions"][0]["value"] == "job-1"


async def test_bad_signatures_rejected(fake: FakeSlack, rig: BoltRig) -> None:
    body = b'{"type":"event_callback","event":{"type":"app_mention"}}'
    headers = {"Content-Type": "application/json", **rig.sender.sign(body, int(time.time()))}
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    assert (await rig.sender.raw(body, headers)).status == 401

    stale = await rig.sender.post_event(
        {"type": "app_mention", "text": "x"}, timestamp=int(time.time()) - 301
    )
    assert stale.status == 401 and stale.json == {"error": "invalid request"}

    challenge = await rig.sender.url_verification("abc")
    assert challenge.status == 200 and challenge.json == {"challenge": "abc"}
    assert rig.mentions == [] and fake.calls_to("auth.test") == []
