"""The app as Slack and operators see it: request verification, health, the manifest, `python -m bot`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import jsonschema
import yaml

from bot import buttons, checks
from bot import web as easel_web
from tests.conftest import SIGNING_SECRET, Running
from tests.fakes.slack_requests import SlackSender
from tests.procs import BotProcess, free_port, http_env

ROOT = Path(__file__).resolve().parent.parent


async def test_unsigned_bad_and_stale_requests_get_401_and_nothing_is_stored(easel: Running) -> None:
    event = easel.sender.envelope({"type": "app_mention", "channel": "C0001", "user": "U0001",
                                   "text": "<@UBOT> a cat", "ts": "1700000000.000100"})
    body = json.dumps(event).encode()
    assert (await easel.sender.raw(body, {"Content-Type": "application/json"})).status == 401
    headers = easel.sender.sign(body, int(time.time()))
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    assert (await easel.sender.raw(body, {**headers, "Content-Type": "application/json"})).status == 401
    stale = easel.sender.sign(body, int(time.time()) - 301)
    assert (await easel.sender.raw(body, {**stale, "Content-Type": "application/json"})).status == 401
    assert await easel.store.jobs.all() == []
    assert easel.openai.requests == []


async def test_url_verification(easel: Running) -> None:
    result = await easel.sender.url_verification("abc123")
    assert result.status == 200 and result.json == {"challenge": "abc123"}


async def test_healthz(easel: Running) -> None:
    async with aiohttp.ClientSession() as s, s.get(easel.url + "/healthz") as r:
        assert r.status == 200
        assert (await r.json())["ok"] is True


def test_manifest_matches_the_listeners() -> None:
    manifest = yaml.safe_load((ROOT / "slack-manifest.yml").read_text())
    settings = manifest["settings"]
    events = set(settings["event_subscriptions"]["bot_events"])
    assert events == {"app_mention", "message.channels", "message.groups", "message.im", "message.mpim",
                      "app_uninstalled", "tokens_revoked"}
    [redirect] = manifest["oauth_config"]["redirect_urls"]
    assert redirect.endswith("/slack/oauth_redirect")
    assert settings["event_subscriptions"]["request_url"].endswith(easel_web.EVENTS_PATH)
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/imagine" and command["url"].endswith(easel_web.EVENTS_PATH)
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    needed = {"app_mentions:read", "channels:history", "groups:history", "im:history", "mpim:history",
              "chat:write", "commands", "files:read", "files:write", "reactions:write"}
    assert needed <= scopes
    interactivity = manifest["settings"]["interactivity"]  # the buttons, the Edit modal, the shortcut
    assert interactivity["is_enabled"] is True and interactivity["request_url"].endswith(easel_web.EVENTS_PATH)
    [shortcut] = manifest["features"]["shortcuts"]
    assert shortcut == {"name": "Edit with Easel", "type": "message", "callback_id": buttons.SHORTCUT,
                        "description": shortcut["description"]}


def test_the_socket_mode_manifest_is_the_http_one_without_addresses() -> None:
    http = yaml.safe_load((ROOT / "slack-manifest.yml").read_text())
    socket = yaml.safe_load((ROOT / "slack-manifest.socket.yml").read_text())
    assert socket["settings"].pop("socket_mode_enabled") is True
    assert http["settings"].pop("socket_mode_enabled") is False
    del http["settings"]["event_subscriptions"]["request_url"]
    del http["settings"]["interactivity"]["request_url"]
    del http["oauth_config"]["redirect_urls"]  # OAuth installs need HTTP mode
    for command in http["features"]["slash_commands"]:
        del command["url"]
    assert socket == http
    assert "YOUR-HOST" not in (ROOT / "slack-manifest.socket.yml").read_text()


def test_the_manifests_follow_slacks_manifest_schema() -> None:
    schema = json.loads((ROOT / "tests" / "fakes" / "specs" / "slack-manifest.schema.1.0.0.json").read_text())
    for name in ("slack-manifest.yml", "slack-manifest.socket.yml"):
        jsonschema.validate(yaml.safe_load((ROOT / name).read_text()), schema)


def test_start_up_checks_the_scopes_the_manifest_asks_for() -> None:
    manifest = yaml.safe_load((ROOT / "slack-manifest.yml").read_text())
    assert set(checks.NEEDED_SCOPES) == set(manifest["oauth_config"]["scopes"]["bot"])


async def test_every_manifest_event_reaches_a_listener(easel: Running) -> None:
    """Bolt answers 404 to event types without a listener, and Slack then retries: each type must be 200."""
    kinds = {"message.channels": ("C9", "channel"), "message.groups": ("G9", "group"),
             "message.im": ("D9", "im"), "message.mpim": ("G8", "mpim")}
    for name, (channel, channel_type) in kinds.items():
        _, result = await easel.sender.message("just chatting", channel=channel, channel_type=channel_type,
                                               user="U7")
        assert result.status == 200, name
    _, result = await easel.sender.mention("hello", channel="C9")
    assert result.status == 200
    for event in ({"type": "tokens_revoked", "tokens": {"oauth": ["U7"], "bot": []}}, {"type": "app_uninstalled"}):
        assert (await easel.sender.post_event(event)).status == 200, event["type"]


async def test_python_m_bot_serves_http_and_stops_cleanly_on_sigterm(fake_slack, fake_openai, tmp_path) -> None:
    port = free_port()
    bot = BotProcess(http_env(fake_slack, fake_openai, tmp_path, port), tmp_path / "bot.log")
    try:
        await bot.start()
        async with SlackSender(url=f"http://127.0.0.1:{port}/slack/events", signing_secret=SIGNING_SECRET) as s:
            ts, result = await s.mention("a subprocess painting")
            assert result.status == 200
        await fake_slack.wait_for("files.completeUploadExternal", timeout=30)
        assert fake_slack.shared_files[0]["thread_ts"] == ts
        assert await bot.terminate() == 0, bot.log.read_text()[-3000:]
        log = bot.log.read_text()
        assert fake_slack.bot_token not in log and fake_openai.api_key not in log
        assert "worker" in log  # the jobs ran in the worker process
    finally:
        await bot.ensure_stopped()


async def test_a_payload_bolt_cannot_read_is_400_when_signed_and_401_when_not(easel: Running) -> None:
    body = json.dumps(easel.sender.envelope({"type": "message", "channel": False})).encode()
    signed = {**easel.sender.sign(body, int(time.time())), "Content-Type": "application/json"}
    assert (await easel.sender.raw(body, signed)).status == 400
    assert (await easel.sender.raw(body, {"Content-Type": "application/json"})).status == 401
    assert await easel.store.jobs.all() == []
