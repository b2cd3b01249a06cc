"""A fake Slack Web API served by aiohttp on 127.0.0.1, for driving the real slack_sdk in tests.

Point ``AsyncWebClient(token=..., base_url=fake.api_url)`` at it. Every request is recorded as a
:class:`Call`; the fake keeps just enough state (messages, reactions, uploads, shared files) to answer
the way Slack does and to let tests assert on what the app did.

It also plays Slack's Socket Mode server: ``apps.connections.open`` (with an ``xapp-`` token) returns a
``ws://`` URL on this fake; a client that connects gets ``{"type": "hello"}``, then whatever envelopes the
test sends with :meth:`FakeSlack.socket_send`; the client's acks land in ``socket_acks``.

Rate limits are off unless asked for: ``FakeSlack(rate_limits=True)`` (or a mapping of overrides, or
:meth:`FakeSlack.set_rate_limits` later) applies Slack's published tiers per workspace (tests/fakes/slack_limits.py):
beyond them a call is answered HTTP 429, ``Retry-After: <s>``, ``{"ok": false, "error": "ratelimited"}``, and
recorded in ``rate_limited`` (it is in ``calls`` too).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import json
import mimetypes
import re
import struct
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml
from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image

from . import slack_blocks
from .slack_limits import RATE_LIMITS, WORKSPACE_POSTS, Limit, Overrides, RateLimiter, table

__all__ = ["Call", "FakeSlack", "DEFAULT_SCOPES", "Limit", "RATE_LIMITS", "WORKSPACE_POSTS", "next_ts"]

_MANIFEST = Path(__file__).resolve().parents[2] / "slack-manifest.yml"
# The bot scopes Easel's manifest asks for: what an installed Easel's token carries.
DEFAULT_SCOPES: tuple[str, ...] = tuple(yaml.safe_load(_MANIFEST.read_text())["oauth_config"]["scopes"]["bot"])

# Per method, from Slack's published Web API spec (specs/slack-web-methods.json): its scopes (any one will do),
# the content types whose body it reads, its parameters. The 2021 spec uses legacy scope names for some.
_SPEC = json.loads((Path(__file__).with_name("specs") / "slack-web-methods.json").read_text())["methods"]
LEGACY_SCOPES = {"chat:write:bot": "chat:write", "chat:write:user": "chat:write", "files:write:user": "files:write"}
_LATER_METHODS: dict[str, dict[str, Any]] = {  # methods newer than the spec, from their docs.slack.dev pages
    "apps.connections.open": {"scopes": ["none"], "consumes": ["application/x-www-form-urlencoded"], "params": []},
    "assistant.threads.setStatus": {"scopes": ["chat:write", "assistant:write"],
                                    "consumes": ["application/json", "application/x-www-form-urlencoded"],
                                    "params": [{"name": "channel_id"}, {"name": "thread_ts"}, {"name": "status"},
                                               {"name": "loading_messages"}]},
}
# Parameters newer than the 2021 spec, from the methods' docs.slack.dev pages: message metadata (an object of
# `event_type` and `event_payload`), which the history methods return only when asked (`include_all_metadata`).
_LATER_PARAMS: dict[str, tuple[str, ...]] = {
    "chat.postMessage": ("metadata",),
    "chat.update": ("metadata",),
    "conversations.history": ("include_all_metadata",),
    "conversations.replies": ("include_all_metadata",),
}
_EVENT_TYPE = re.compile(r"^[a-zA-Z0-9_]+$")  # Slack's rule for a metadata event_type ("snake_case")
_HISTORY_SCOPES = {"C": "channels:history", "G": "groups:history", "D": "im:history"}  # by channel id prefix

MAX_TEXT_LEN = 40_000
TRIGGER_SECONDS = 3  # a trigger id opens a view only this long after the interaction
MAX_REQUEST_LINE = 8192  # bytes Slack's front end accepts in a request line ("POST /api/...?args HTTP/1.1")
_LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Slack</title></head>"
    '<body><h1>Sign in to your workspace</h1><form action="/signin"></form></body></html>'
)

_last_ts_us = 0


def next_ts() -> str:
    """Return a Slack-style timestamp ("1700000000.000100") unique and increasing within this process."""
    global _last_ts_us
    now_us = time.time_ns() // 1000
    _last_ts_us = max(now_us, _last_ts_us + 1)
    return f"{_last_ts_us // 1_000_000}.{_last_ts_us % 1_000_000:06d}"


class _CIDict(dict[str, str]):
    """A plain dict of headers whose lookups ignore case (keys keep the case they were sent with)."""

    def _find(self, key: object) -> str | None:
        if isinstance(key, str):
            low = key.lower()
            for k in dict.keys(self):
                if k.lower() == low:
                    return k
        return None

    def __getitem__(self, key: str) -> str:
        real = self._find(key)
        if real is None:
            raise KeyError(key)
        return dict.__getitem__(self, real)

    def __contains__(self, key: object) -> bool:
        return self._find(key) is not None

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        real = self._find(key)
        return default if real is None else dict.__getitem__(self, real)


@dataclass
class Call:
    """One request the fake received."""

    method: str  # "chat.postMessage", ..., or "upload" / "download" / "response_url"
    args: dict[str, Any]  # merged query + form + JSON body (JSON-string args such as `files` left as given)
    headers: dict[str, str]  # case-insensitive lookups
    body: bytes = b""  # raw request body
    path: str = ""  # request path, e.g. "/api/chat.postMessage" or "/response/r1"


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    error: str
    plain: bool = False  # a text/plain body instead of Slack's JSON (a proxy's or load balancer's answer)
    after_commit: bool = False  # the call takes effect first; only its answer is the fault
    drop: bool = False  # the connection is closed with no answer at all


@dataclass
class _Outage:
    fault: _Fault
    until: float | None  # time.monotonic() at which it ends; None: until ``calls`` are used
    calls: int | None  # calls it still fails; None: until ``until``


@dataclass
class _StoredFile:
    id: str
    name: str
    title: str
    mimetype: str
    content: bytes
    user: str
    created: int
    serve_html: bool = False
    rate: float | None = None  # bytes per second the download trickles at (None: all at once)
    shares: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # channel -> [{ts, thread_ts}]


class SlackObserver:
    """What a FakeSlack given ``observer=`` tells it, as things happen: synchronously, in the fake's event loop,
    before the answer is sent (so a time taken here is when Slack handled the call). Every method does nothing
    here; an observer overrides those it needs."""

    def handled(self, method: str, args: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        """A Web API method ran: its arguments as the fake read them, and the JSON answer it gave (also when a
        fault set to strike after the call took effect then replaces that answer on the wire)."""

    def upload_arrived(self, file_id: str) -> None:
        """A POST arrived at the upload URL of ``file_id``; its body is not read yet."""

    def upload_handled(self, file_id: str) -> None:
        """That POST was answered (its bytes stored, or refused)."""

    def rate_limited(self, method: str, args: Mapping[str, Any], retry_after: int) -> None:
        """A call was refused by the rate limits (``FakeSlack(rate_limits=...)``): HTTP 429 with that
        Retry-After; the method did not run."""


class FakeSlack:
    """Fake Slack Web API; use as ``async with FakeSlack() as fake:``."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        team: str = "Easel Test",
        scopes: Sequence[str] = DEFAULT_SCOPES,
        observer: SlackObserver | None = None,
        rate_limits: bool | Overrides = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rate_limits``: False (the default) limits nothing; True applies Slack's published tiers
        (``RATE_LIMITS``, tests/fakes/slack_limits.py) per workspace; a mapping applies them with these
        overrides (method -> calls a minute, a ``Limit``, or None for no limit). ``clock`` (seconds) times the
        buckets. See :meth:`set_rate_limits`."""
        self.bot_token = bot_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team = team
        self.scopes = list(scopes)
        self.url = ""
        self.api_url = ""
        # OAuth installs (oauth.v2.access): the app's credentials, and workspaces waiting to be installed by code
        self.client_id = "1111.2222"
        self.client_secret = "oauth-client-secret-0123"
        self.workspaces: dict[str, dict[str, str]] = {}  # bot token -> {team_id, team, bot_user_id, bot_id}
        self.users: dict[str, dict[str, Any]] = {}  # user id -> extra fields of users.info (is_admin, is_owner...)
        # user group id ("S…") -> {"handle", "name", "users": [user ids], "disabled": bool}; see add_usergroup
        self.usergroups: dict[str, dict[str, Any]] = {}
        self.usergroups_on_plan = True  # False: a free workspace, where the usergroups methods are refused
        self._oauth_codes: dict[str, str] = {}  # code -> the bot token its exchange gives
        self._token = ""  # the token of the request being answered

        self.calls: list[Call] = []
        self.refused: list[Call] = []  # requests turned away before reaching a method (URL too long)
        self.rate_limited: list[Call] = []  # calls answered 429 ratelimited by the rate limits (also in calls)
        self.clock = clock
        self.limiter: RateLimiter | None = None
        self.set_rate_limits(rate_limits)
        self._held_answers: defaultdict[str, list[asyncio.Event]] = defaultdict(list)
        self.unknown_arguments: list[tuple[str, str]] = []  # (method, argument) Slack would silently ignore
        self.messages: list[dict[str, Any]] = []
        self.deleted_messages: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.uploads: dict[str, bytes] = {}
        self.shared_files: list[dict[str, Any]] = []
        self.private_files: list[dict[str, Any]] = []  # uploads completed without a channel (shared nowhere)
        self.reactions: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.views: dict[str, dict[str, Any]] = {}  # view id -> the view as views.open returned it
        self.homes: dict[str, dict[str, Any]] = {}  # user id -> their Home tab as views.publish returned it
        self.deleted_files: list[str] = []
        self._triggers_used: set[str] = set()

        self._timeline: list[dict[str, Any]] = []  # messages, file shares and seeded messages, in order
        self._files: dict[str, _StoredFile] = {}
        self._pending_uploads: dict[str, dict[str, Any]] = {}  # file_id -> {filename, length, alt_txt}
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._outages: dict[str, _Outage] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._ids = itertools.count(1)
        self._cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None

        # Socket Mode
        self.socket_connections = 0  # WebSocket connections accepted so far (reconnects included)
        self.socket_sent: list[dict[str, Any]] = []  # every message the fake sent (hello, envelopes, ...)
        self.socket_received: list[dict[str, Any]] = []  # every JSON message a client sent
        self.socket_acks: dict[str, dict[str, Any]] = {}  # envelope_id -> the client's ack, payload included
        self._sockets: list[web.WebSocketResponse] = []  # open connections, oldest first
        self._tickets: set[str] = set()
        self._observer = observer

    # ------------------------------------------------------------------ lifecycle

    async def start(self, port: int = 0) -> None:
        """Serve on 127.0.0.1 (on `port`, or one the OS chooses); sets ``url`` and ``api_url``."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_get("/files-pri/{team_file}/{name}", self._handle_download)
        app.router.add_post("/response/{key}", self._handle_response_url)
        app.router.add_get("/socket", self._handle_socket)
        # aiohttp's own line limit is lower than Slack's: the fake answers long lines itself, as Slack does.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, max_line_size=4 * MAX_REQUEST_LINE)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.api_url = self.url + "/api/"

    async def close(self) -> None:
        """Stop serving (open Socket Mode connections are closed first, as "going away")."""
        await self.socket_close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ rate limits

    def set_rate_limits(self, rate_limits: bool | Overrides = True) -> None:
        """Switch the rate limits on (True: Slack's published tiers; a mapping: those with overrides, method ->
        calls a minute, a ``Limit`` or None) or off (False). Every bucket starts full again."""
        if rate_limits is False:
            self.limiter = None
        else:
            self.limiter = RateLimiter(table(None if rate_limits is True else rate_limits), self.clock)

    def rate_limited_counts(self) -> dict[str, int]:
        """How many calls of each method were refused by the rate limits so far."""
        counts: dict[str, int] = defaultdict(int)
        for call in self.rate_limited:
            counts[call.method] += 1
        return dict(counts)

    def workspace_of(self, token: str) -> str:
        """The team id of the workspace a bot token belongs to (the fake's own team for its own token)."""
        w = self.workspaces.get(token)
        return w["team_id"] if w else self.team_id

    # ------------------------------------------------------------------ inspection

    def calls_to(self, method: str) -> list[Call]:
        """All recorded calls to ``method``, oldest first."""
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:  # noqa: ASYNC109
        """Wait until at least ``count`` calls to ``method`` were recorded; return them all."""
        await self.wait_until(
            lambda: len(self.calls_to(method)) >= count,
            timeout=timeout,
            what=f"{count} call(s) to {method}",
        )
        return self.calls_to(method)

    async def wait_until(
        self,
        predicate: Callable[[], Any],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline parameter is the point of this helper
        what: str = "",
    ) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked after each recorded call); return its value."""
        result: Any = None

        def check() -> bool:
            nonlocal result
            result = predicate()
            return bool(result)

        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(check), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or predicate!r}; {self.summary()}"
                ) from None
        return result

    def summary(self) -> str:
        """A short description of the calls recorded so far (for assertion messages)."""
        if not self.calls:
            return "no calls recorded"
        lines = [f"{len(self.calls)} call(s):"]
        for c in self.calls[-30:]:
            args = {k: (v if len(repr(v)) < 80 else repr(v)[:77] + "...") for k, v in c.args.items()}
            lines.append(f"  {c.method} {args}")
        return "\n".join(lines)

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Messages and file shares in that thread (root included when known), in the order they happened."""
        return [
            m
            for m in self._timeline
            if m.get("channel") == channel and (m.get("ts") == thread_ts or m.get("thread_ts") == thread_ts)
        ]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The message (or file share) with that ts in that channel, if any."""
        for m in self._timeline:
            if m.get("channel") == channel and m.get("ts") == ts:
                return m
        return None

    # ------------------------------------------------------------------ Socket Mode

    @property
    def socket_open(self) -> int:
        """How many Socket Mode connections are open now."""
        return sum(1 for ws in self._sockets if not ws.closed)

    async def wait_socket_connected(self, timeout: float = 10.0, *, count: int = 1) -> int:  # noqa: ASYNC109
        """Wait until ``count`` connections were accepted in all and one is open; return the total."""
        await self.wait_until(
            lambda: self.socket_connections >= count and self.socket_open > 0,
            timeout=timeout,
            what=f"{count} Socket Mode connection(s), one of them open",
        )
        return self.socket_connections

    async def wait_socket_closed(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until no Socket Mode connection is open."""
        await self.wait_until(
            lambda: self.socket_open == 0, timeout=timeout, what="every Socket Mode connection to close"
        )

    async def socket_send(
        self,
        envelope_type: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Send an ``events_api``/``slash_commands``/``interactive`` envelope as Slack does; return its id.

        Like Slack, one envelope goes to one connection: the newest open one. ``accepts_response_payload``
        defaults to False for ``events_api`` and True otherwise.
        """
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {"envelope_id": envelope_id, "type": envelope_type, "payload": payload}
        if accepts_response_payload is None:
            accepts_response_payload = envelope_type != "events_api"
        envelope["accepts_response_payload"] = accepts_response_payload
        if envelope_type == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        await self._socket_send_json(envelope)
        return envelope_id

    async def socket_request_reconnect(self, reason: str = "refresh_requested") -> None:
        """Tell the connected client to reconnect, as Slack does before it recycles a connection."""
        await self._socket_send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})

    async def wait_socket_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait for the client's ack of ``envelope_id``; return it (``envelope_id`` and any ``payload``)."""
        ack: dict[str, Any] = await self.wait_until(
            lambda: self.socket_acks.get(envelope_id), timeout=timeout, what=f"the ack of {envelope_id}"
        )
        return ack

    async def socket_close_all(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Close every open Socket Mode connection from the server side."""
        for ws in list(self._sockets):
            if not ws.closed:
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(ws.close(code=code, message=b"fake closing"), 2)
        await self._notify()

    async def _socket_send_json(self, message: dict[str, Any]) -> None:
        target = next((ws for ws in reversed(self._sockets) if not ws.closed), None)
        if target is None:
            raise AssertionError(
                f"no open Socket Mode connection to send {message.get('type')!r} to "
                f"({self.socket_connections} accepted so far); {self.summary()}"
            )
        self.socket_sent.append(message)
        await target.send_str(json.dumps(message))

    # ------------------------------------------------------------------ setup helpers

    def add_file(
        self,
        content: bytes,
        *,
        name: str = "input.png",
        mimetype: str = "image/png",
        serve_html: bool = False,
        title: str | None = None,
        user: str = "U0001",
        rate: float | None = None,
    ) -> dict[str, Any]:
        """Register a downloadable file and return its Slack file object as it appears in events. With
        ``rate``, its download trickles at that many bytes a second."""
        self._require_started()
        f = _StoredFile(
            id=self._new_id("F"),
            name=name,
            title=title if title is not None else name,
            mimetype=mimetype,
            content=content,
            user=user,
            created=int(time.time()),
            serve_html=serve_html,
            rate=rate,
        )
        self._files[f.id] = f
        return self._file_object(f)

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0001",
        ts: str | None = None,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Seed a (user) message into the history that conversations.replies/history read."""
        msg: dict[str, Any] = {"type": "message", "channel": channel, "user": user, "text": text}
        msg["ts"] = ts or next_ts()
        msg["thread_ts"] = thread_ts
        if files:
            msg["files"] = files
            msg["upload"] = False
        msg.update(extra)
        self._timeline.append(msg)
        return msg

    def add_fault(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int | None = 1,
        error: str = "ratelimited",
        times: int = 1,
        plain: bool = False,
        after_commit: bool = False,
        drop: bool = False,
    ) -> None:
        """Make the next ``times`` calls to ``method`` (or "upload"/"download") fail. ``plain`` answers with a
        text/plain body rather than Slack's JSON.

        ``after_commit``: the call does what it asks first (a completed upload is shared, a message posted) and
        only its answer is lost, as when Slack's front end fails after the back end committed. ``drop``: the
        answer is no HTTP response at all, the connection is closed (``status`` is then unused)."""
        for _ in range(times):
            self._faults[method].append(_Fault(status=status, retry_after=retry_after, error=error, plain=plain,
                                               after_commit=after_commit, drop=drop))

    def add_workspace(self, *, team_id: str, team: str, bot_token: str, bot_user_id: str = "UBOT2",
                      bot_id: str = "BBOT2", code: str | None = None) -> str:
        """Another workspace, installed through OAuth: its bot token works once `code` has been exchanged
        (oauth.v2.access); returns the code."""
        self.workspaces[bot_token] = {"team_id": team_id, "team": team, "bot_user_id": bot_user_id, "bot_id": bot_id}
        code = code or f"code-{team_id}"
        self._oauth_codes[code] = bot_token
        return code

    def add_usergroup(self, handle: str, users: Sequence[str], *, name: str | None = None,
                      disabled: bool = False) -> str:
        """A user group of this workspace (what usergroups.list and usergroups.users.list show); returns its id.
        Change its members later through ``usergroups[id]["users"]``."""
        group_id = f"S{next(self._ids):09d}"
        self.usergroups[group_id] = {"handle": handle, "name": name or handle.title(), "users": list(users),
                                     "disabled": disabled, "created": int(time.time())}
        return group_id

    def token_of(self, call: Call) -> str:
        header = call.headers.get("Authorization", "")
        return header[len("Bearer "):] if header.startswith("Bearer ") else str(call.args.get("token") or "")

    def add_outage(
        self,
        method: str,
        *,
        seconds: float | None = None,
        calls: int | None = None,
        status: int = 503,
        error: str = "service_unavailable",
    ) -> None:
        """Make every call to ``method`` (or "upload"/"download") fail with ``status`` for the next ``seconds``,
        or for the next ``calls`` calls, as a stretch of Slack errors does (unlike ``add_fault``, retries made
        within the window fail too). A new outage of the same method replaces the old one."""
        if (seconds is None) == (calls is None):
            raise ValueError("give seconds or calls")
        until = None if seconds is None else time.monotonic() + seconds
        self._outages[method] = _Outage(_Fault(status=status, retry_after=None, error=error), until, calls)

    def end_outage(self, method: str) -> None:
        self._outages.pop(method, None)

    def gate(self, method: str) -> asyncio.Event:
        """Hold every call to ``method`` (Web API methods only), once recorded, until the returned event is set:
        the test can act while the app waits for that answer (``wait_for`` sees the held calls)."""
        self._require_started()
        gate = self._gates[method] = asyncio.Event()
        return gate

    def hold_answer(self, method: str) -> asyncio.Event:
        """Hold the answer to the next call to ``method`` (a Web API method) after the call has done what it
        asks (a message posted), until the returned event is set: the app can be killed between Slack's
        commit and its hearing of it."""
        self._require_started()
        event = asyncio.Event()
        self._held_answers[method].append(event)
        return event

    def response_url(self, key: str = "r1") -> str:
        """A response_url on this fake; POSTs to it are recorded as Call(method="response_url")."""
        self._require_started()
        return f"{self.url}/response/{key}"

    # ------------------------------------------------------------------ internals

    def _require_started(self) -> None:
        if not self.url:
            raise RuntimeError(
                "FakeSlack is not started; use `async with FakeSlack() as fake` or await start()"
            )

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):09d}"

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        async with self._cond:
            self._cond.notify_all()

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if queue:
            return queue.popleft()
        outage = self._outages.get(method)
        if outage is None:
            return None
        if outage.until is not None and time.monotonic() >= outage.until:
            del self._outages[method]
            return None
        if outage.calls is not None:
            outage.calls -= 1
            if outage.calls <= 0:
                del self._outages[method]
        return outage.fault

    @staticmethod
    def _json(
        data: Mapping[str, Any], *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.json_response(dict(data), status=status, headers=dict(headers or {}))

    @staticmethod
    def _error(error: str, **extra: Any) -> web.Response:
        return web.json_response({"ok": False, "error": error, **extra})

    def _fault_response(self, fault: _Fault, *, plain: bool = False) -> web.Response:
        headers: dict[str, str] = {}
        if fault.status == 429 and fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if plain or fault.plain:
            return web.Response(status=fault.status, text=f"error: {fault.error}", headers=headers)
        return self._json({"ok": False, "error": fault.error}, status=fault.status, headers=headers)

    def _file_object(self, f: _StoredFile) -> dict[str, Any]:
        url = f"{self.url}/files-pri/{self.team_id}-{f.id}/{f.name}"
        ext = f.name.rsplit(".", 1)[-1].lower() if "." in f.name else "binary"
        obj: dict[str, Any] = {
            "id": f.id,
            "created": f.created,
            "timestamp": f.created,
            "name": f.name,
            "title": f.title,
            "mimetype": f.mimetype,
            "filetype": ext,
            "pretty_type": ext.upper(),
            "user": f.user,
            "user_team": self.team_id,
            "mode": "hosted",
            "editable": False,
            "is_external": False,
            "external_type": "",
            "is_public": bool(f.shares),
            "size": len(f.content),
            "url_private": url,
            "url_private_download": url,
            "permalink": f"{self.url}/files/{f.user}/{f.id}/{f.name}",
        }
        if f.mimetype.startswith("image/"):
            size = _header_size(f.content)
            if size is not None:
                obj["original_w"], obj["original_h"] = size
        if f.shares:
            obj["shares"] = {"public": {ch: [dict(s) for s in lst] for ch, lst in f.shares.items()}}
            obj["channels"] = list(f.shares)
        else:
            obj["channels"] = []
        return obj

    def _bot_message(self, channel: str, ts: str, args: Mapping[str, Any]) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": "A0001",
            "team": self.team_id,
            "ts": ts,
            "text": args.get("text") or "",
            "thread_ts": str(args["thread_ts"]) if args.get("thread_ts") else None,
            "blocks": _maybe_json(args.get("blocks")) or None,
        }
        attachments = _maybe_json(args.get("attachments"))
        if attachments:
            msg["attachments"] = attachments
        metadata = _maybe_json(args.get("metadata"))
        if metadata:
            msg["metadata"] = metadata
        return msg

    def _mark_reply(self, channel: str, thread_ts: str | None, reply_ts: str) -> None:
        if not thread_ts:
            return
        root = self.message(channel, thread_ts)
        if root is not None and root.get("ts") != reply_ts:
            root["thread_ts"] = thread_ts
            root["reply_count"] = int(root.get("reply_count", 0)) + 1
            root["latest_reply"] = reply_ts

    # ------------------------------------------------------------------ HTTP handlers

    async def _read_args(self, request: web.Request) -> tuple[dict[str, Any], bytes]:
        args: dict[str, Any] = dict(request.query)
        ctype = request.content_type
        if ctype.startswith("multipart/"):
            form = await request.post()
            raw = b""
            for k, v in form.items():
                if isinstance(v, web.FileField):
                    data = v.file.read()
                    raw = raw or data
                    args[k] = data
                else:
                    args[k] = v
            return args, raw
        raw = await request.read()
        if not raw:
            return args, raw
        if ctype == "application/json" or (
            ctype in ("", "application/octet-stream") and raw.lstrip()[:1] == b"{"
        ):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if isinstance(body, dict):
                args.update(body)
        elif ctype == "application/x-www-form-urlencoded" or not ctype:
            args.update(dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)))
        return args, raw

    def _as_slack_reads(
        self, spec: Mapping[str, Any], method: str, request: web.Request, args: dict[str, Any]
    ) -> dict[str, Any]:
        """The arguments as Slack reads them: a JSON body only if the method takes JSON (else its values are
        not seen at all); arguments the method does not have are noted (Slack ignores them silently)."""
        if request.content_type == "application/json" and "application/json" not in spec.get("consumes", []):
            args = dict(request.query)
        known = {p["name"] for p in spec.get("params", [])} | {"token", "team_id", *_LATER_PARAMS.get(method, ())}
        for name in args:
            if name not in known:
                self.unknown_arguments.append((method, name))
        return args

    @staticmethod
    def _needed_scopes(spec: Mapping[str, Any], method: str, args: Mapping[str, Any]) -> list[str]:
        """The scopes of which the token needs one (none for `auth.test` and the like)."""
        if method.startswith("conversations.") and method.endswith(("history", "replies")):
            needed = _HISTORY_SCOPES.get(str(args.get("channel") or "C")[:1])
            return [needed, "mpim:history"] if needed == "groups:history" else [needed] if needed else []
        scopes = [LEGACY_SCOPES.get(s, s) for s in spec.get("scopes", []) if s != "none"]
        return list(dict.fromkeys(scopes))

    def _authorized(self, method: str, request: web.Request, args: Mapping[str, Any]) -> bool:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else str(args.get("token") or "")
        if method == "apps.connections.open":
            return token.startswith("xapp-")
        if method == "oauth.v2.access":
            expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            return header == f"Basic {expected}"
        self._token = token
        return token == self.bot_token or (token in self.workspaces and token not in self._oauth_codes.values())

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args, raw = await self._read_args(request)
        line = len(request.method) + len(request.raw_path.encode()) + len(" HTTP/1.1") + 1
        if line > MAX_REQUEST_LINE:  # Slack's front end refuses it, with a page of its own (not JSON)
            self.refused.append(Call(method, args, _CIDict(request.headers.items()), raw, request.path))
            await self._notify()
            return web.Response(status=414, text="414 Request-URI Too Large", content_type="text/plain")
        call = Call(method, args, _CIDict(request.headers.items()), raw, request.path)
        await self._record(call)
        gate = self._gates.get(method)
        if gate is not None:
            await gate.wait()
        fault = self._take_fault(method)
        if fault is not None and not fault.after_commit:
            return self._drop(request) if fault.drop else self._fault_response(fault)
        if not self._authorized(method, request, args):
            return self._error("invalid_auth")
        spec = _SPEC.get(method) or _LATER_METHODS.get(method)
        if spec is None:
            return self._error("unknown_method")
        if self.limiter is not None:
            retry_after = self.limiter.admit(self.workspace_of(self._token), method, str(args.get("channel") or ""))
            if retry_after is not None:
                self.rate_limited.append(call)
                if self._observer is not None:
                    self._observer.rate_limited(method, args, retry_after)
                await self._notify()
                return self._json({"ok": False, "error": "ratelimited"}, status=429,
                                  headers={"Retry-After": str(retry_after)})
        args = self._as_slack_reads(spec, method, request, args)
        needed = self._needed_scopes(spec, method, args)
        if needed and not set(needed) & set(self.scopes):
            return self._error("missing_scope", needed=",".join(needed), provided=",".join(self.scopes))
        handler = self._handlers().get(method)
        response = self._json({"ok": True}) if handler is None else handler(args)
        if self._observer is not None:
            self._observer.handled(method, args, json.loads(response.body))
        await self._notify()  # state changed: let wait_until predicates on state re-check
        held = self._held_answers.get(method)
        if held:
            await held.pop(0).wait()
        if fault is not None:  # committed: the answer is what goes wrong
            return self._drop(request) if fault.drop else self._fault_response(fault)
        return response

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never delivered: the connection is gone

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], web.Response]]:
        return {
            "auth.test": self._auth_test,
            "oauth.v2.access": self._oauth_v2_access,
            "users.info": self._users_info,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "files.info": self._files_info,
            "files.delete": self._files_delete,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "assistant.threads.setStatus": self._ok,
            "apps.connections.open": self._apps_connections_open,
        }

    def _ok(self, args: dict[str, Any]) -> web.Response:
        return self._json({"ok": True})

    def _users_info(self, args: dict[str, Any]) -> web.Response:
        user = str(args.get("user") or "")
        if not user.startswith(("U", "W")):
            return self._error("user_not_found")
        fields = {"is_admin": False, "is_owner": False, "is_primary_owner": False, **self.users.get(user, {})}
        return self._json({"ok": True, "user": {"id": user, "team_id": self.team_id, "name": user.lower(),
                                                "deleted": False, "is_bot": False, **fields}})

    @staticmethod
    def _flag(value: Any) -> bool:
        """A boolean argument as Slack reads it ("true", "1"; slack_sdk sends "1" or "0")."""
        return value is True or str(value).lower() in ("1", "true")

    def _usergroup(self, group_id: str, g: Mapping[str, Any], *, users: bool, count: bool) -> dict[str, Any]:
        """A user group object as usergroups.list returns it (the shape of Slack's documented example)."""
        obj: dict[str, Any] = {
            "id": group_id, "team_id": self.team_id, "is_usergroup": True, "is_subteam": True,
            "name": g["name"], "description": "", "handle": g["handle"], "is_external": False,
            "date_create": g["created"], "date_update": g["created"],
            "date_delete": g["created"] + 1 if g["disabled"] else 0, "auto_type": None, "auto_provision": False,
            "enterprise_subteam_id": "", "created_by": "U0ADMIN", "updated_by": "U0ADMIN", "deleted_by": None,
            "prefs": {"channels": [], "groups": []},
        }
        if users:
            obj["users"] = list(g["users"])
        if count:
            obj["user_count"] = len(g["users"])
        return obj

    def _usergroups_list(self, args: dict[str, Any]) -> web.Response:
        if not self.usergroups_on_plan:
            return self._error("plan_upgrade_required")
        disabled = self._flag(args.get("include_disabled"))
        return self._json({"ok": True, "usergroups": [
            self._usergroup(i, g, users=self._flag(args.get("include_users")),
                            count=self._flag(args.get("include_count")))
            for i, g in self.usergroups.items() if disabled or not g["disabled"]]})

    def _usergroups_users_list(self, args: dict[str, Any]) -> web.Response:
        if not self.usergroups_on_plan:
            return self._error("plan_upgrade_required")
        group_id = str(args.get("usergroup") or "")
        if not group_id:
            return self._error("invalid_arguments")
        g = self.usergroups.get(group_id)
        if g is None or (g["disabled"] and not self._flag(args.get("include_disabled"))):
            return self._error("no_such_subteam")
        return self._json({"ok": True, "users": list(g["users"])})

    def _oauth_v2_access(self, args: dict[str, Any]) -> web.Response:
        token = self._oauth_codes.pop(str(args.get("code") or ""), None)
        if token is None:
            return self._error("invalid_code")
        w = self.workspaces[token]
        return self._json({
            "ok": True, "app_id": "A0EASEL", "authed_user": {"id": "U0INSTALLER"}, "scope": ",".join(self.scopes),
            "token_type": "bot", "access_token": token, "bot_user_id": w["bot_user_id"],
            "team": {"id": w["team_id"], "name": w["team"]}, "enterprise": None, "is_enterprise_install": False,
        })

    def _auth_test(self, args: dict[str, Any]) -> web.Response:
        w = self.workspaces.get(self._token) or {"team_id": self.team_id, "team": self.team,
                                                  "bot_user_id": self.bot_user_id, "bot_id": self.bot_id}
        return self._json(
            {
                "ok": True,
                "url": f"{self.url}/",
                "team": w["team"],
                "user": "easel",
                "team_id": w["team_id"],
                "user_id": w["bot_user_id"],
                "bot_id": w["bot_id"],
                "is_enterprise_install": False,
            },
            headers={"x-oauth-scopes": ",".join(self.scopes)},
        )

    def _check_text(self, args: Mapping[str, Any]) -> str | None:
        text = args.get("text")
        if text is not None and len(str(text)) > MAX_TEXT_LEN:
            return "msg_too_long"
        if not text and not _maybe_json(args.get("blocks")) and not _maybe_json(args.get("attachments")):
            return "no_text"
        return None

    @staticmethod
    def _check_metadata(args: Mapping[str, Any]) -> str | None:
        """Slack refuses metadata that is not an object of a snake_case `event_type` and an object
        `event_payload`."""
        if "metadata" not in args:
            return None
        metadata = _maybe_json(args["metadata"])
        if not isinstance(metadata, dict) or set(metadata) - {"event_type", "event_payload"}:
            return "invalid_metadata_format"
        event_type, payload = metadata.get("event_type"), metadata.get("event_payload")
        if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type) or not isinstance(payload, dict):
            return "invalid_metadata_schema"
        return None

    def _file_type(self, file_id: str) -> str | None:
        f = self._files.get(file_id)
        return f.mimetype if f is not None else None

    def _blocks_refused(self, args: Mapping[str, Any]) -> web.Response | None:
        if "blocks" not in args:
            return None
        problems = slack_blocks.blocks_problems(_maybe_json(args["blocks"]), kinds=slack_blocks.MESSAGE_BLOCKS,
                                                limit=slack_blocks.MAX_MESSAGE_BLOCKS, file_type=self._file_type)
        if problems:
            return self._error("invalid_blocks", response_metadata={"messages": problems})
        return None

    def _chat_post_message(self, args: dict[str, Any]) -> web.Response:
        channel = args.get("channel")
        if not channel:
            return self._error("channel_not_found")
        problem = self._check_text(args) or self._check_metadata(args)
        if problem:
            return self._error(problem)
        refused = self._blocks_refused(args)
        if refused is not None:
            return refused
        ts = next_ts()
        msg = self._bot_message(str(channel), ts, args)
        self.messages.append(msg)
        self._timeline.append(msg)
        self._mark_reply(str(channel), msg.get("thread_ts"), ts)
        public = self._public(msg)
        return self._json({"ok": True, "channel": channel, "ts": ts, "message": public})

    def _chat_update(self, args: dict[str, Any]) -> web.Response:
        channel, ts = args.get("channel"), args.get("ts")
        if not channel:
            return self._error("channel_not_found")
        msg = next((m for m in self.messages if m["channel"] == channel and m["ts"] == ts), None)
        if msg is None:
            return self._error("message_not_found")
        problem = self._check_text(args) or self._check_metadata(args)
        if problem:
            return self._error(problem)
        refused = self._blocks_refused(args)
        if refused is not None:
            return refused
        if "text" in args:
            msg["text"] = args.get("text") or ""
        for key in ("blocks", "attachments", "metadata"):
            if key in args:
                msg[key] = _maybe_json(args[key]) or None
        msg["edited"] = {"user": self.bot_user_id, "ts": next_ts()}
        public = self._public(msg)
        return self._json({"ok": True, "channel": channel, "ts": ts, "text": msg["text"], "message": public})

    def _chat_delete(self, args: dict[str, Any]) -> web.Response:
        channel, ts = args.get("channel"), args.get("ts")
        msg = next((m for m in self.messages if m["channel"] == channel and m["ts"] == ts), None)
        if msg is None:
            return self._error("message_not_found")
        self.messages.remove(msg)
        self._timeline.remove(msg)
        self.deleted_messages.append(msg)
        return self._json({"ok": True, "channel": channel, "ts": ts})

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> web.Response:
        channel, user = args.get("channel"), args.get("user")
        if not channel:
            return self._error("channel_not_found")
        if not user:
            return self._error("user_not_in_channel")
        problem = self._check_text(args)
        if problem:
            return self._error(problem)
        ts = next_ts()
        eph = self._bot_message(str(channel), ts, args)
        eph["ephemeral_user"] = user
        self.ephemerals.append(eph)
        return self._json({"ok": True, "message_ts": ts})

    def _chat_get_permalink(self, args: dict[str, Any]) -> web.Response:
        channel, ts = str(args.get("channel") or ""), str(args.get("message_ts") or "")
        return self._json(
            {
                "ok": True,
                "channel": channel,
                "permalink": f"{self.url}/archives/{channel}/p{ts.replace('.', '')}",
            }
        )

    def _reaction_key(self, args: Mapping[str, Any]) -> tuple[tuple[str, str], str] | web.Response:
        channel, ts = args.get("channel"), args.get("timestamp")
        name = str(args.get("name") or "").strip(":")
        if not channel or not ts:
            return self._error("no_item_specified")
        if not name:
            return self._error("invalid_name")
        return (str(channel), str(ts)), name

    def _reactions_add(self, args: dict[str, Any]) -> web.Response:
        parsed = self._reaction_key(args)
        if isinstance(parsed, web.Response):
            return parsed
        key, name = parsed
        if name in self.reactions[key]:
            return self._error("already_reacted")
        self.reactions[key].add(name)
        return self._json({"ok": True})

    def _reactions_remove(self, args: dict[str, Any]) -> web.Response:
        parsed = self._reaction_key(args)
        if isinstance(parsed, web.Response):
            return parsed
        key, name = parsed
        if name not in self.reactions.get(key, set()):
            return self._error("no_reaction")
        self.reactions[key].discard(name)
        return self._json({"ok": True})

    def _files_get_upload_url(self, args: dict[str, Any]) -> web.Response:
        filename = args.get("filename")
        if not filename:
            return self._error("invalid_arguments", detail="filename is required")
        try:
            length = int(str(args.get("length")))
        except ValueError:
            length = 0
        if length <= 0:
            return self._error("invalid_arguments", detail="length must be a positive integer")
        file_id = self._new_id("F")
        self._pending_uploads[file_id] = {
            "filename": str(filename),
            "length": length,
            "alt_txt": args.get("alt_txt"),
        }
        return self._json({"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id})

    def _files_complete_upload(self, args: dict[str, Any]) -> web.Response:
        files = _maybe_json(args.get("files"))
        if not isinstance(files, list) or not files:
            return self._error("invalid_arguments", detail="files must be a non-empty JSON list")
        channels: list[str] = []
        if args.get("channel_id"):
            channels.append(str(args["channel_id"]))
        if args.get("channels"):
            channels.extend(c for c in str(args["channels"]).split(",") if c and c not in channels)
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        if thread_ts and not channels:
            return self._error("invalid_arguments", detail="thread_ts requires channel_id")
        for item in files:
            if not isinstance(item, dict) or item.get("id") not in self.uploads:
                return self._error("file_not_found")
        comment = args.get("initial_comment")
        stored: list[_StoredFile] = []
        for item in files:
            file_id = str(item["id"])
            pending = self._pending_uploads.pop(file_id, None) or {"filename": file_id}
            filename = pending["filename"]
            title = str(item.get("title") or filename)
            f = _StoredFile(
                id=file_id,
                name=filename,
                title=title,
                mimetype=mimetypes.guess_type(filename)[0] or "application/octet-stream",
                content=self.uploads[file_id],
                user=self.bot_user_id,
                created=int(time.time()),
            )
            self._files[file_id] = f
            stored.append(f)
        share_ts = next_ts() if channels else None
        for f in stored:
            for ch in channels:
                f.shares.setdefault(ch, []).append(
                    {"ts": share_ts, "thread_ts": thread_ts, "channel_name": ch, "team_id": self.team_id}
                    if thread_ts
                    else {"ts": share_ts, "channel_name": ch, "team_id": self.team_id}
                )
            # A file completed with no channel is the uploader's own, shared nowhere (`private_files`).
            (self.shared_files if channels else self.private_files).append(
                {
                    "file_id": f.id,
                    "title": f.title,
                    "filename": f.name,
                    "channel_id": channels[0] if channels else None,
                    "channels": list(channels),
                    "thread_ts": thread_ts,
                    "initial_comment": comment,
                    "bytes": f.content,
                    "ts": share_ts,
                }
            )
        for ch in channels:
            share: dict[str, Any] = {
                "type": "message",
                "subtype": "file_share",
                "channel": ch,
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "ts": share_ts,
                "text": comment or "",
                "upload": True,
                "files": [self._file_object(f) for f in stored],
                "thread_ts": thread_ts,
            }
            self._timeline.append(share)
            self._mark_reply(ch, thread_ts, str(share_ts))
        return self._json({"ok": True, "files": [self._file_object(f) for f in stored]})

    def _files_info(self, args: dict[str, Any]) -> web.Response:
        f = self._files.get(str(args.get("file") or ""))
        if f is None:
            return self._error("file_not_found")
        return self._json({"ok": True, "file": self._file_object(f), "comments": [], "response_metadata": {}})

    def _files_delete(self, args: dict[str, Any]) -> web.Response:
        f = self._files.get(str(args.get("file") or ""))
        if f is None:
            return self._error("file_not_found")
        if f.user != self.bot_user_id:  # a bot token deletes only the files it uploaded
            return self._error("cant_delete_file")
        del self._files[f.id]
        self.uploads.pop(f.id, None)
        self.deleted_files.append(f.id)
        for entry in self._timeline:
            if entry.get("files"):
                entry["files"] = [x if x.get("id") != f.id else {"id": f.id, "mode": "tombstone"}
                                  for x in entry["files"]]
        return self._json({"ok": True})

    def trigger_problem(self, trigger_id: str) -> str | None:
        """Slack's trigger ids are good once, for 3 seconds: `<unix time>.<n>.<hex>` as its payloads carry."""
        issued, _, rest = trigger_id.partition(".")
        if not issued.isdigit() or not rest:
            return "invalid_trigger_id"
        if trigger_id in self._triggers_used:
            return "exchanged_trigger_id"
        if time.time() - int(issued) > TRIGGER_SECONDS:
            return "expired_trigger_id"
        return None

    def _views_open(self, args: dict[str, Any]) -> web.Response:
        trigger = str(args.get("trigger_id") or "")
        view = _maybe_json(args.get("view"))
        if not trigger:
            return self._error("invalid_arguments", response_metadata={"messages": ["[ERROR] missing trigger_id"]})
        problem = self.trigger_problem(trigger)
        if problem:
            return self._error(problem)
        problems = slack_blocks.view_problems(view, self._file_type)
        if problems:
            return self._error("invalid_arguments", response_metadata={"messages": problems})
        self._triggers_used.add(trigger)
        view_id = self._new_id("V")
        opened = {**view, "id": view_id, "team_id": self.team_id, "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
                  "app_id": "A0001", "bot_id": self.bot_id, "state": {"values": {}},
                  "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", "")}
        self.views[view_id] = opened
        return self._json({"ok": True, "view": opened})

    def _views_publish(self, args: dict[str, Any]) -> web.Response:
        """A user's Home tab: `user_id` (required, a user), `view` of type home (checked as views.open checks a
        modal); an optional `hash` must be the one the user's current Home view has."""
        user = str(args.get("user_id") or "")
        view = _maybe_json(args.get("view"))
        if not user:
            return self._error("invalid_arguments",
                               response_metadata={"messages": ["[ERROR] missing required field: user_id"]})
        if not user.startswith(("U", "W")):
            return self._error("not_found")
        if isinstance(view, dict) and view.get("type") != "home":
            return self._error("invalid_arguments", response_metadata={
                "messages": ["[ERROR] must be home [json-pointer:/view/type]"]})
        problems = slack_blocks.view_problems(view, self._file_type)
        if problems:
            return self._error("invalid_arguments", response_metadata={"messages": problems})
        current = self.homes.get(user)
        if args.get("hash") and (current is None or current["hash"] != args["hash"]):
            return self._error("hash_conflict")
        published = {**view, "id": (current or {}).get("id") or self._new_id("V"), "team_id": self.team_id,
                     "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}", "app_id": "A0001", "bot_id": self.bot_id,
                     "state": {"values": {}}, "private_metadata": view.get("private_metadata", ""),
                     "callback_id": view.get("callback_id", "")}
        self.homes[user] = published
        return self._json({"ok": True, "view": published})

    @staticmethod
    def _public(m: Mapping[str, Any], *, metadata: bool = True) -> dict[str, Any]:
        """A recorded message as the API shows it: no ``channel`` key, no None values (and, for the history
        methods not asked `include_all_metadata`, no metadata)."""
        return {k: v for k, v in m.items() if k != "channel" and v is not None and (metadata or k != "metadata")}

    @staticmethod
    def _with_metadata(args: Mapping[str, Any]) -> bool:
        return str(args.get("include_all_metadata", "0")).lower() in ("1", "true")

    def _conversations_replies(self, args: dict[str, Any]) -> web.Response:
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        if not channel:
            return self._error("channel_not_found")
        entries = self.thread(channel, ts)
        if not entries:
            return self._error("thread_not_found")
        root = [m for m in entries if m.get("ts") == ts]
        replies = sorted((m for m in entries if m.get("ts") != ts), key=lambda m: _ts_key(m["ts"]))
        msgs = [self._public(m, metadata=self._with_metadata(args)) for m in root + replies]
        return self._json(
            {"ok": True, "messages": msgs, "has_more": False, "response_metadata": {"next_cursor": ""}}
        )

    def _conversations_history(self, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel") or "")
        if not channel:
            return self._error("channel_not_found")
        inclusive = str(args.get("inclusive", "0")).lower() in ("1", "true")
        latest, oldest = args.get("latest"), args.get("oldest")
        limit = int(str(args.get("limit") or 100))

        def keep(m: Mapping[str, Any]) -> bool:
            if m.get("channel") != channel or m.get("thread_ts") not in (None, m.get("ts")):
                return False
            key = _ts_key(m["ts"])
            if latest is not None and (
                key > _ts_key(str(latest)) or (key == _ts_key(str(latest)) and not inclusive)
            ):
                return False
            return not (
                oldest is not None
                and (key < _ts_key(str(oldest)) or (key == _ts_key(str(oldest)) and not inclusive))
            )

        msgs = sorted((m for m in self._timeline if keep(m)), key=lambda m: _ts_key(m["ts"]), reverse=True)
        return self._json(
            {"ok": True, "messages": [self._public(m, metadata=self._with_metadata(args)) for m in msgs[:limit]],
             "has_more": len(msgs) > limit}
        )

    def _apps_connections_open(self, args: dict[str, Any]) -> web.Response:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        ws_url = self.url.replace("http://", "ws://", 1)
        return self._json({"ok": True, "url": f"{ws_url}/socket?ticket={ticket}&app_id=A0001"})

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        await self._record(
            Call("socket.connect", {"ticket": ticket}, _CIDict(request.headers.items()), b"", request.path)
        )
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        # autoping answers the client's pings ("sdk-ping-pong:<time>") with pongs, its liveness check.
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        hello = {
            "type": "hello",
            "num_connections": self.socket_open + 1,
            "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
            "connection_info": {"app_id": "A0001"},
        }
        self.socket_sent.append(hello)
        await ws.send_str(json.dumps(hello))
        self._sockets.append(ws)
        self.socket_connections += 1
        await self._notify()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    data = {"_raw": msg.data}
                if not isinstance(data, dict):
                    data = {"_json": data}
                self.socket_received.append(data)
                if isinstance(data.get("envelope_id"), str):
                    self.socket_acks[data["envelope_id"]] = data
                await self._notify()
        finally:
            self._sockets.remove(ws)
            await self._notify()
        return ws

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if self._observer is None:
            return await self._take_upload(request, file_id)
        self._observer.upload_arrived(file_id)
        response = await self._take_upload(request, file_id)
        self._observer.upload_handled(file_id)
        return response

    async def _take_upload(self, request: web.Request, file_id: str) -> web.Response:
        raw = await request.read()
        await self._record(
            Call("upload", {"file_id": file_id}, _CIDict(request.headers.items()), raw, request.path)
        )
        fault = self._take_fault("upload")
        if fault is not None:
            return self._drop(request) if fault.drop else self._fault_response(fault, plain=True)
        pending = self._pending_uploads.get(file_id)
        if pending is None:
            return web.Response(status=404, text="file not found")
        if len(raw) != pending["length"]:
            return web.Response(
                status=400, text=f"length mismatch: expected {pending['length']}, got {len(raw)}"
            )
        self.uploads[file_id] = raw
        await self._notify()
        return web.Response(status=200, text=f"OK - {len(raw)}")

    async def _handle_download(self, request: web.Request) -> web.Response:
        team_file, name = request.match_info["team_file"], request.match_info["name"]
        file_id = team_file.split("-", 1)[1] if "-" in team_file else team_file
        await self._record(
            Call(
                "download",
                {"file_id": file_id, "name": name},
                _CIDict(request.headers.items()),
                b"",
                request.path,
            )
        )
        fault = self._take_fault("download")
        if fault is not None:
            return self._fault_response(fault, plain=True)
        f = self._files.get(file_id)
        if f is None or f.name != name:
            return web.Response(status=404, text="not found")
        if f.serve_html or request.headers.get("Authorization") != f"Bearer {self.bot_token}" or \
                "files:read" not in self.scopes:
            return web.Response(status=200, text=_LOGIN_PAGE, content_type="text/html")
        if f.rate is not None:
            return await self._trickle(request, f)
        return web.Response(
            status=200,
            body=f.content,
            headers={"Content-Type": f.mimetype, "Content-Disposition": f'attachment; filename="{f.name}"'},
        )

    async def _trickle(self, request: web.Request, f: _StoredFile) -> web.StreamResponse:
        """A slow sender: the file a byte at a time, ``f.rate`` bytes a second."""
        assert f.rate is not None
        response = web.StreamResponse(headers={"Content-Type": f.mimetype})
        response.content_length = len(f.content)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for i in range(len(f.content)):
                await response.write(f.content[i : i + 1])
                await asyncio.sleep(1 / f.rate)
            await response.write_eof()
        return response

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            args = json.loads(raw) if raw else {}
        except ValueError:
            args = {"_raw": raw.decode("utf-8", "replace")}
        if not isinstance(args, dict):
            args = {"_json": args}
        await self._record(Call("response_url", args, _CIDict(request.headers.items()), raw, request.path))
        return self._json({"ok": True})


def _header_size(content: bytes) -> tuple[int, int] | None:
    """An image's dimensions from its header, as Slack reports them (`original_w`, `original_h`). PNG and GIF
    are read by hand: their header says it whatever the size (a decompression bomb has dimensions too), and
    Pillow's bomb limit is a process-wide setting the app under test relies on."""
    if content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return width, height
    if content[:6] in (b"GIF87a", b"GIF89a") and len(content) >= 10:
        width, height = struct.unpack("<HH", content[6:10])
        return width, height
    try:
        with Image.open(io.BytesIO(content)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - not an image Slack can measure: no dimensions
        return None


def _maybe_json(value: Any) -> Any:
    """Decode a JSON-string argument (form/query encoding); pass other values through."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _ts_key(ts: str) -> tuple[int, int]:
    sec, _, frac = ts.partition(".")
    try:
        return int(sec), int(frac.ljust(6, "0")[:6])
    except ValueError:
        return 0, 0
