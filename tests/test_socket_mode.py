"""Socket Mode end to end: `python -m bot` with SLACK_APP_TOKEN, through the real slack_bolt
`AsyncSocketModeHandler` and slack_sdk's aiohttp Socket Mode client, against FakeSlack's WebSocket server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.conftest import wait_until
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack, next_ts

ROOT = Path(__file__).resolve().parent.parent
APP_TOKEN = "xapp-1-test"
CHANNEL, USER = "C0001", "U0001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _event_callback(fake: FakeSlack, event: dict[str, Any]) -> dict[str, Any]:
    """The same `event_callback` body Slack would POST in HTTP mode."""
    return {
        "token": "verification-token",
        "team_id": fake.team_id,
        "context_team_id": fake.team_id,
        "context_enterprise_id": None,
        "api_app_id": "A0001",
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": fake.team_id, "user_id": fake.bot_user_id,
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


def _slash_command(fake: FakeSlack, text: str) -> dict[str, Any]:
    return {
        "token": "verification-token",
        "team_id": fake.team_id,
        "team_domain": "easel-test",
        "channel_id": CHANNEL,
        "channel_name": "general",
        "user_id": USER,
        "user_name": "someone",
        "command": "/imagine",
        "text": text,
        "api_app_id": "A0001",
        "is_enterprise_install": "false",
        "response_url": fake.response_url("socket-cmd"),
        "trigger_id": f"{int(time.time())}.1.{uuid.uuid4().hex}",
    }


class _Bot:
    """`python -m bot` as a subprocess; its output goes to a file (a pipe nobody reads could fill up)."""

    def __init__(self, log_path: Path, port: int) -> None:
        self.log_path = log_path
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    async def start(self, env: dict[str, str]) -> None:
        with self.log_path.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=ROOT, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            )

    async def stop(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def start_bot(
    fake_slack: FakeSlack, fake_openai: FakeOpenAI, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[_Bot]]]:
    """Starts `python -m bot` in Socket Mode against the fakes; kills it at teardown if still running."""
    bots: list[_Bot] = []

    async def start() -> _Bot:
        bot = _Bot(tmp_path / f"easel-{len(bots)}.log", _free_port())
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SLACK_BOT_TOKEN": fake_slack.bot_token,
            "SLACK_APP_TOKEN": APP_TOKEN,  # Socket Mode; deliberately no SLACK_SIGNING_SECRET
            "SLACK_API_URL": fake_slack.api_url,
            "OPENAI_API_KEY": fake_openai.api_key,
            "OPENAI_BASE_URL": fake_openai.base_url,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'easel.db'}",
            "PORT": str(bot.port),
        }
        bots.append(bot)
        await bot.start(env)
        return bot

    try:
        yield start
    finally:
        for bot in bots:
            await bot.kill()
            # pytest shows a test's captured output only when it fails: this is the tail on failure
            print(f"---- tail of python -m bot output ({bot.log_path}) ----\n{bot.tail()}")


async def _healthy(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url + "/healthz") as r:
            return await r.json() if r.status == 200 else None
    except aiohttp.ClientError:
        return None


async def test_python_m_bot_in_socket_mode_end_to_end(
    start_bot: Callable[[], Awaitable[_Bot]], fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    bot = await start_bot()
    async with aiohttp.ClientSession() as session:
        health = await wait_until(lambda: _healthy(session, bot.url), timeout=30,
                                  what="python -m bot to answer /healthz")
        assert health == {"ok": True, "mode": "socket"}
        await fake_slack.wait_socket_connected(timeout=30)
        [opened] = fake_slack.calls_to("apps.connections.open")
        assert opened.headers["Authorization"] == f"Bearer {APP_TOKEN}"  # the app token, not the bot token
        assert fake_slack.socket_sent[0]["type"] == "hello"

        # (a) an app_mention over the socket: acked, then the image lands in that message's thread
        ts = next_ts()
        mention = {"type": "app_mention", "channel": CHANNEL, "user": USER, "ts": ts, "event_ts": ts,
                   "team": fake_slack.team_id, "text": f"<@{fake_slack.bot_user_id}> a fox in socket mode"}
        fake_slack.add_message(CHANNEL, mention["text"], user=USER, ts=ts)
        mention_env = await fake_slack.socket_send("events_api", _event_callback(fake_slack, mention))
        ack = await fake_slack.wait_socket_ack(mention_env, timeout=30)
        assert ack["envelope_id"] == mention_env and not ack.get("payload")

        [shared] = await fake_slack.wait_until(
            lambda: [f for f in fake_slack.shared_files if f["thread_ts"] == ts], timeout=30,
            what="the fox image in the mention's thread",
        )
        assert shared["channel_id"] == CHANNEL and shared["bytes"]
        assert "A detailed rendering of: a fox in socket mode" in (shared["initial_comment"] or "")

        # (b) /imagine over the socket: the ack payload carries the private answer; the image lands in the
        # thread of a new root message
        command = _slash_command(fake_slack, "a socket poster")
        command_env = await fake_slack.socket_send("slash_commands", command)
        ack = await fake_slack.wait_socket_ack(command_env, timeout=30)
        assert "On it" in ack["payload"]["text"], ack

        def poster() -> list[dict[str, Any]]:
            roots = {m["ts"] for m in fake_slack.messages if m["channel"] == CHANNEL
                     and m.get("thread_ts") in (None, m["ts"]) and "a socket poster" in m["text"]}
            return [f for f in fake_slack.shared_files if f["thread_ts"] in roots]

        [shared] = await fake_slack.wait_until(poster, timeout=30, what="the poster in the command's thread")
        assert shared["channel_id"] == CHANNEL and shared["bytes"]
        assert "A detailed rendering of: a socket poster" in (shared["initial_comment"] or "")
        assert len(fake_openai.create_requests()) == 2

        # (c) HTTP serves only the health check in Socket Mode: Slack's request URL is not there
        async with session.post(bot.url + "/slack/events", json={"type": "url_verification",
                                                                 "challenge": "x"}) as r:
            assert r.status == 404

        # (d) Slack asks the client to reconnect: it opens a new connection and keeps serving on it
        await fake_slack.socket_request_reconnect()
        await fake_slack.wait_socket_connected(timeout=30, count=2)
        await fake_slack.wait_until(lambda: fake_slack.socket_open == 1, timeout=30,
                                    what="the old connection to close")
        again = await fake_slack.socket_send("slash_commands", _slash_command(fake_slack, "help"))
        assert (await fake_slack.wait_socket_ack(again, timeout=30))["payload"]["text"]

    code = await bot.stop()
    assert code == 0
    await fake_slack.wait_socket_closed(timeout=10)  # close_async() hung up rather than dying mid-connection
    log = bot.log()
    for secret in (fake_slack.bot_token, APP_TOKEN, fake_openai.api_key):
        assert secret not in log


async def test_a_rejected_app_token_stops_start_up_with_one_line(
    start_bot: Callable[[], Awaitable[_Bot]], fake_slack: FakeSlack
) -> None:
    """A revoked or mistyped app token is named, once, and the process ends (exit 2) instead of retrying."""
    fake_slack.add_fault("apps.connections.open", status=200, retry_after=None, error="invalid_auth",
                         times=1000)
    bot = await start_bot()
    assert bot.proc is not None
    code = await asyncio.wait_for(bot.proc.wait(), 30)
    assert code == 2
    log = bot.tail()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if line.startswith("easel: ")]
    assert len(lines) == 1 and "SLACK_APP_TOKEN" in lines[0] and "invalid_auth" in lines[0]
    assert len(fake_slack.calls_to("apps.connections.open")) == 1


async def test_sigterm_stops_the_bot_while_socket_mode_cannot_connect(
    start_bot: Callable[[], Awaitable[_Bot]], fake_slack: FakeSlack
) -> None:
    """Slack unreachable for Socket Mode: one log line per attempt (no traceback), backing off; /healthz says
    why; SIGTERM still stops the process at once."""
    fake_slack.add_fault("apps.connections.open", status=503, retry_after=None, error="service_unavailable",
                         times=1000)
    bot = await start_bot()
    await fake_slack.wait_until(lambda: len(fake_slack.calls_to("apps.connections.open")) >= 6, timeout=30,
                                what="several attempts (each retried by the SDK first)")
    assert bot.proc is not None
    async with aiohttp.ClientSession() as session, session.get(bot.url + "/healthz") as r:
        assert r.status == 503  # not ready while the socket is down
        assert (await r.json())["error"] == "socket not connected"
    bot.proc.send_signal(signal.SIGTERM)
    try:
        # (the failure this guards against is a process stuck for good; the bound leaves room for a busy machine)
        assert await asyncio.wait_for(bot.proc.wait(), 20) == 0
    except TimeoutError:
        pytest.fail("python -m bot was still running 20 s after SIGTERM (stuck connecting to Socket Mode)")
    log = bot.tail()
    assert "Traceback" not in log
    attempts = [line for line in log.splitlines() if "Socket Mode: Slack answered" in line]
    assert len(attempts) >= 2, log
    assert all("trying again in" in line for line in attempts)


async def test_fake_socket_mode_server_speaks_to_the_real_client(fake_slack: FakeSlack) -> None:
    """The fake's side of the protocol, in process: hello, envelopes, acks, reconnects, server-side close."""
    client = SocketModeClient(app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=fake_slack.api_url))
    seen: list[dict[str, Any]] = []
    requests: list[SocketModeRequest] = []

    async def on_message(_client: Any, message: dict[str, Any], _raw: str | None) -> None:
        seen.append(message)

    async def on_request(c: Any, req: SocketModeRequest) -> None:
        requests.append(req)
        await c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id,
                                                             payload={"text": f"got {req.type}"}))

    client.message_listeners.append(on_message)
    client.socket_mode_request_listeners.append(on_request)
    try:
        await client.connect()
        await fake_slack.wait_socket_connected()
        await wait_until(lambda: any(m.get("type") == "hello" for m in seen), what="hello")

        env = await fake_slack.socket_send("events_api", {"type": "event_callback", "event": {}},
                                           retry_attempt=1, retry_reason="timeout")
        ack = await fake_slack.wait_socket_ack(env)
        assert ack == {"envelope_id": env, "payload": {"text": "got events_api"}}
        [req] = requests
        assert (req.type, req.accepts_response_payload, req.retry_attempt, req.retry_reason) == (
            "events_api", False, 1, "timeout")

        await fake_slack.socket_request_reconnect()  # {"type": "disconnect"}: the client dials a new URL
        await fake_slack.wait_socket_connected(count=2)
        await fake_slack.wait_until(lambda: fake_slack.socket_open == 1, what="the old connection to close")

        await fake_slack.socket_close_all()  # the server hangs up: the client reconnects by itself
        await fake_slack.wait_socket_connected(count=3)
        env = await fake_slack.socket_send("slash_commands", {"command": "/imagine", "text": "x"})
        assert (await fake_slack.wait_socket_ack(env))["payload"] == {"text": "got slash_commands"}
        assert requests[-1].accepts_response_payload is True
        assert len(fake_slack.calls_to("apps.connections.open")) == 3
    finally:
        await client.close()
    await fake_slack.wait_socket_closed()
