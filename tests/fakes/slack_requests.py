"""Build and send signed Slack -> app requests (events, slash commands, interactions) over HTTP."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from slack_sdk.signature import SignatureVerifier

from .slack_api import next_ts

__all__ = ["Result", "SlackSender"]

_event_ids = itertools.count(1)
_ENVELOPE_KEYS = ("event_id", "retry_num", "retry_reason", "timestamp")


@dataclass
class Result:
    """What the app answered."""

    status: int
    body_text: str
    json: Any | None  # decoded body when it is JSON, else None
    elapsed: float  # seconds from sending to the full body read
    headers: dict[str, str] = field(default_factory=dict)


class SlackSender:
    """Sends requests shaped and signed like Slack's to an app's events endpoint."""

    def __init__(
        self,
        *,
        url: str,
        signing_secret: str,
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        api_app_id: str = "A0001",
        team_domain: str = "easel-test",
        verification_token: str = "verification-token",
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.api_app_id = api_app_id
        self.team_domain = team_domain
        self.verification_token = verification_token
        self.timeout = timeout
        self._verifier = SignatureVerifier(signing_secret)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SlackSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp wants a running loop when a session is made.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    # ------------------------------------------------------------------ signing and raw sending

    def sign(self, body: bytes, timestamp: int) -> dict[str, str]:
        """The X-Slack-Request-Timestamp and X-Slack-Signature headers for ``body``."""
        signature = self._verifier.generate_signature(timestamp=str(timestamp), body=body)
        return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}

    async def raw(self, body: bytes, headers: dict[str, str]) -> Result:
        """POST ``body`` with exactly ``headers`` (no signing)."""
        started = time.perf_counter()
        async with self._get_session().post(self.url, data=body, headers=headers) as resp:
            text = await resp.text()
            elapsed = time.perf_counter() - started
            try:
                decoded: Any | None = json.loads(text) if text else None
            except ValueError:
                decoded = None
            return Result(resp.status, text, decoded, elapsed, dict(resp.headers))

    async def _signed(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Result:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {"Content-Type": content_type, **self.sign(body, ts), **(extra_headers or {})}
        return await self.raw(body, headers)

    async def post_json(
        self, payload: dict[str, Any], *, timestamp: int | None = None, headers: dict[str, str] | None = None
    ) -> Result:
        """Sign and POST ``payload`` as JSON."""
        body = json.dumps(payload).encode()
        return await self._signed(body, "application/json", timestamp=timestamp, extra_headers=headers)

    async def post_form(
        self, form: dict[str, str], *, timestamp: int | None = None, headers: dict[str, str] | None = None
    ) -> Result:
        """Sign and POST ``form`` urlencoded."""
        body = urlencode(form).encode()
        return await self._signed(
            body, "application/x-www-form-urlencoded", timestamp=timestamp, extra_headers=headers
        )

    # ------------------------------------------------------------------ Events API

    def envelope(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """Wrap ``event`` in an event_callback envelope."""
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(_event_ids):08d}{uuid.uuid4().hex[:4].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    async def post_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
    ) -> Result:
        """Send ``event`` in an event_callback envelope; ``retry_num`` adds Slack's retry headers."""
        headers: dict[str, str] = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        return await self.post_json(
            self.envelope(event, event_id=event_id), timestamp=timestamp, headers=headers
        )

    async def url_verification(
        self, challenge: str = "challenge-123", *, timestamp: int | None = None
    ) -> Result:
        """Send the url_verification handshake."""
        payload = {"token": self.verification_token, "challenge": challenge, "type": "url_verification"}
        return await self.post_json(payload, timestamp=timestamp)

    def rich_text(self, elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A message's ``blocks`` as Slack sends them with an event: one rich_text section of ``elements``."""
        return [
            {
                "type": "rich_text",
                "block_id": uuid.uuid4().hex[:5],
                "elements": [{"type": "rich_text_section", "elements": elements}],
            }
        ]

    @staticmethod
    def _split_kw(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        envelope = {k: kw.pop(k) for k in _ENVELOPE_KEYS if k in kw}
        return envelope, kw

    @staticmethod
    def _apply_extra(event: dict[str, Any], extra: dict[str, Any]) -> None:
        for k, v in extra.items():
            if v is None:
                event.pop(k, None)
            else:
                event[k] = v

    async def mention(
        self,
        text: str,
        *,
        channel: str = "C0001",
        user: str = "U0001",
        ts: str | None = None,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        **kw: Any,
    ) -> tuple[str, Result]:
        """Send an app_mention whose text is "<@BOT> " + ``text``; returns (ts, result).

        ``kw``: ``event_id``/``retry_num``/``retry_reason``/``timestamp`` go to :meth:`post_event`; any other
        key is set on the event (a ``None`` value removes that key).
        """
        envelope_kw, extra = self._split_kw(dict(kw))
        ts = ts or next_ts()
        event: dict[str, Any] = {
            "type": "app_mention",
            "user": user,
            "text": f"<@{self.bot_user_id}> {text}",
            "ts": ts,
            "client_msg_id": str(uuid.uuid4()),
            "team": self.team_id,
            "blocks": self.rich_text(
                [{"type": "user", "user_id": self.bot_user_id}, {"type": "text", "text": f" {text}"}]
            ),
            "channel": channel,
            "event_ts": ts,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:
            event["files"] = files
            event["upload"] = False
        self._apply_extra(event, extra)
        return ts, await self.post_event(event, **envelope_kw)

    async def message(
        self,
        text: str,
        *,
        channel: str = "C0001",
        user: str = "U0001",
        ts: str | None = None,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        channel_type: str = "channel",
        subtype: str | None = None,
        bot_id: str | None = None,
        **kw: Any,
    ) -> tuple[str, Result]:
        """Send a ``message`` event (``subtype`` "file_share" when ``files``); returns (ts, result).

        ``kw`` works as in :meth:`mention`.
        """
        envelope_kw, extra = self._split_kw(dict(kw))
        ts = ts or next_ts()
        event: dict[str, Any] = {"type": "message"}
        if subtype is None and files:
            subtype = "file_share"
        if subtype:
            event["subtype"] = subtype
        event.update(
            {
                "user": user,
                "text": text,
                "ts": ts,
                "team": self.team_id,
                "blocks": self.rich_text([{"type": "text", "text": text}]),
                "channel": channel,
                "event_ts": ts,
                "channel_type": channel_type,
            }
        )
        if bot_id:
            event["bot_id"] = bot_id
            event["app_id"] = "A_OTHER" if bot_id != "BBOT" else self.api_app_id
        else:
            event["client_msg_id"] = str(uuid.uuid4())
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:
            event["files"] = files
            event["upload"] = False
        self._apply_extra(event, extra)
        return ts, await self.post_event(event, **envelope_kw)

    # ------------------------------------------------------------------ commands and interactions

    async def command(
        self,
        text: str,
        *,
        command: str = "/imagine",
        channel: str = "C0001",
        user: str = "U0001",
        response_url: str | None = None,
        trigger_id: str | None = None,
        timestamp: int | None = None,
    ) -> Result:
        """Send a slash command (form-encoded). Without ``response_url`` a dead local URL is used."""
        form = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": "general" if channel.startswith("C") else "directmessage",
            "user_id": user,
            "user_name": f"user-{user.lower()}",
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or "http://127.0.0.1:9/commands/no-response-url",
            "trigger_id": trigger_id or f"{int(time.time())}.1.{uuid.uuid4().hex}",
        }
        return await self.post_form(form, timestamp=timestamp)

    async def action(self, payload: dict[str, Any], *, timestamp: int | None = None) -> Result:
        """Send an interaction payload as form field ``payload=<json>``."""
        return await self.post_form({"payload": json.dumps(payload)}, timestamp=timestamp)

    def block_actions_payload(
        self,
        action_id: str,
        *,
        value: str = "",
        block_id: str = "actions",
        channel: str = "C0001",
        user: str = "U0001",
        message_ts: str,
        thread_ts: str | None = None,
        message: dict[str, Any] | None = None,
        response_url: str | None = None,
    ) -> dict[str, Any]:
        """A block_actions payload for a button click on the message ``message_ts``."""
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        if thread_ts:
            container["thread_ts"] = thread_ts
        msg = dict(message or {"type": "message", "user": self.bot_user_id, "ts": message_ts, "text": ""})
        if thread_ts:
            msg.setdefault("thread_ts", thread_ts)
        return {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": f"user-{user.lower()}",
                "name": f"user-{user.lower()}",
                "team_id": self.team_id,
            },
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": f"{int(time.time())}.1.{uuid.uuid4().hex}",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "general"},
            "message": msg,
            "state": {"values": {}},
            "response_url": response_url or "http://127.0.0.1:9/actions/no-response-url",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": action_id, "emoji": True},
                    "value": value,
                    "action_ts": next_ts(),
                }
            ],
        }

    def view_submission_payload(
        self,
        view: dict[str, Any],
        values: dict[str, dict[str, Any]],
        *,
        user: str = "U0001",
    ) -> dict[str, Any]:
        """A view_submission of ``view`` (as views.open returned it) with ``values``: block id -> the value of
        its one element, as Slack sends it: ``{"type": "plain_text_input", "value": ...}``,
        ``{"type": "static_select", "selected_option": {...}}`` or ``{"type": "file_input", "files": [...]}``."""
        state = {"values": {block: {"value": value} for block, value in values.items()}}
        return {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {"id": user, "username": f"user-{user.lower()}", "name": f"user-{user.lower()}",
                     "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "trigger_id": f"{int(time.time())}.1.{uuid.uuid4().hex}",
            "view": {**view, "state": state},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def message_action_payload(
        self,
        message: dict[str, Any],
        *,
        callback_id: str,
        channel: str = "C0001",
        user: str = "U0001",
        response_url: str | None = None,
    ) -> dict[str, Any]:
        """A message shortcut (``message_action``) used on ``message`` (a message as the API shows it)."""
        msg = {k: v for k, v in message.items() if k != "channel" and v is not None}
        return {
            "type": "message_action",
            "token": self.verification_token,
            "action_ts": next_ts(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {"id": user, "username": f"user-{user.lower()}", "name": f"user-{user.lower()}",
                     "team_id": self.team_id},
            "channel": {"id": channel, "name": "general"},
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": f"{int(time.time())}.1.{uuid.uuid4().hex}",
            "response_url": response_url or "http://127.0.0.1:9/actions/no-response-url",
            "message_ts": msg["ts"],
            "message": msg,
        }
