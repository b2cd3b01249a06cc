"""Malformed but correctly signed requests, sent through HTTP to a running Easel on both databases: every one
is answered 2xx (ignored or handled) or 4xx, never 5xx (Slack retries a 5xx three times).

The payloads are drawn by hypothesis: a request Slack could send (an event, a slash command, an interaction)
with one to three things wrong in it: ids longer than any column, NUL bytes, lone surrogates, values of the
wrong type, missing or odd envelopes, bodies that are not what their content type says. The test sends them
all and counts the answers by status, then fails on any 5xx, naming a few of the requests that got one.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import time
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import SIGNING_SECRET, Running, wait_until
from tests.fakes.slack_api import next_ts

PAYLOADS = 2_400  # per database

LONG = st.sampled_from([33, 64, 65, 129, 201, 1000]).map(lambda n: ("U" * n))
ODD_STRINGS = st.one_of(
    LONG,
    st.sampled_from(["C0001\x00", "\x00", "1700000000.000100\x00", "T\x000001", "\ud800", "a\udfffb",
                     "\ud83d", "", " ", "../../etc", "<!channel>", "%00", "\u202e", "1e309", "NaN"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12).map(lambda s: s + "\x00"),
    st.text(max_size=40),
)
JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), ODD_STRINGS),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
EVENT_FIELDS = ("type", "subtype", "channel", "user", "text", "ts", "thread_ts", "files", "channel_type",
                "team", "bot_id", "hidden", "message", "event_ts", "blocks")
ENVELOPE_FIELDS = ("team_id", "event", "type", "event_id", "api_app_id", "authorizations", "event_time",
                   "context_team_id", "enterprise_id", "is_enterprise_install", "token")
COMMAND_FIELDS = ("team_id", "channel_id", "user_id", "trigger_id", "text", "response_url", "command",
                  "enterprise_id", "api_app_id", "user_name", "channel_name")


def _event(kind: str, text: str) -> dict[str, Any]:
    ts = next_ts()
    event: dict[str, Any] = {"type": kind, "user": "U0001", "text": text, "ts": ts, "channel": "C0001",
                             "event_ts": ts, "team": "T0001", "channel_type": "channel"}
    return event


def _envelope(event: Any) -> dict[str, Any]:
    return {"token": "verification-token", "team_id": "T0001", "api_app_id": "A0001", "event": event,
            "type": "event_callback", "event_id": f"Ev{time.time_ns()}", "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": "T0001", "user_id": "UBOT", "is_bot": True,
                                "is_enterprise_install": False}]}


@st.composite
def _event_request(draw: st.DrawFn) -> tuple[str, bytes, str]:
    kind = draw(st.sampled_from(["app_mention", "message"]))
    event = _event(kind, "<@UBOT> a fox" if kind == "app_mention" else draw(st.sampled_from(["a fox", "<@UBOT> x"])))
    if draw(st.booleans()):
        event["thread_ts"] = draw(st.sampled_from(["1700000000.000100", event["ts"]]))
    if draw(st.booleans()):
        event["files"] = [{"id": "F0001", "name": "a.png", "mimetype": "image/png", "size": 10,
                           "url_private_download": "https://files.slack.com/files-pri/T0001-F0001/a.png"}]
    envelope: Any = _envelope(event)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["event", "event", "envelope", "file", "whole"]))
        if where == "event" and isinstance(envelope, dict) and isinstance(envelope.get("event"), dict):
            envelope["event"][draw(st.sampled_from(EVENT_FIELDS))] = draw(st.one_of(ODD_STRINGS, JUNK))
        elif where == "file" and isinstance(envelope, dict) and isinstance(envelope.get("event"), dict) \
                and isinstance(envelope["event"].get("files"), list) and envelope["event"]["files"]:
            envelope["event"]["files"][0][draw(st.sampled_from(
                ["id", "name", "mimetype", "size", "url_private_download", "url_private"]))] = draw(
                st.one_of(ODD_STRINGS, JUNK))
        elif where == "envelope" and isinstance(envelope, dict):
            envelope[draw(st.sampled_from(ENVELOPE_FIELDS))] = draw(st.one_of(
                ODD_STRINGS, JUNK, st.sampled_from([[], {}, "", None, [{}], {"type": []}]),
            ))
        elif where == "whole":
            envelope = draw(st.one_of(st.sampled_from([[], None, "x", 5, {}, {"type": "event_callback"}]),
                                      JUNK))
    body = json.dumps(envelope).encode()
    if draw(st.integers(0, 20)) == 0:  # bytes that are not UTF-8, or not JSON at all
        body = draw(st.sampled_from([body[:-1], body + b"\xff", b"\xff" + body, b"{", body.replace(b"{", b"[", 1)]))
    return "event", body, "application/json"


@st.composite
def _command_request(draw: st.DrawFn) -> tuple[str, bytes, str]:
    form: dict[str, Any] = {"token": "verification-token", "team_id": "T0001", "team_domain": "easel-test",
                            "channel_id": "C0001", "channel_name": "general", "user_id": "U0001",
                            "user_name": "someone", "command": "/imagine", "text": "a fox",
                            "api_app_id": "A0001", "response_url": "http://127.0.0.1:9/commands/r",
                            "trigger_id": f"{int(time.time())}.1.{time.time_ns()}"}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(COMMAND_FIELDS))
        form[name] = draw(ODD_STRINGS)
    parts = []
    for key, value in form.items():
        raw = value.encode("utf-8", "surrogatepass")  # a lone surrogate as its (invalid) UTF-8 bytes
        parts.append(f"{key}={urllib.parse.quote_from_bytes(raw)}")
    if draw(st.integers(0, 10)) == 0:
        parts.append(draw(st.sampled_from(["%ff=%fe", "text=%ff", "=", "&&", "payload=%7B"])))
    return "command", "&".join(parts).encode(), "application/x-www-form-urlencoded"


@st.composite
def _interaction_request(draw: st.DrawFn) -> tuple[str, bytes, str]:
    kind = draw(st.sampled_from(["view_submission", "block_actions", "shortcut", "message_action",
                                 "view_closed", "block_suggestion", "interactive_message", "dialog_submission",
                                 None, 7, ""]))
    payload: Any = {"type": kind, "team": {"id": "T0001"}, "user": {"id": "U0001"}, "api_app_id": "A0001",
                    "token": "verification-token", "trigger_id": "1.2.3"}
    if draw(st.booleans()):
        payload["view"] = draw(st.one_of(st.just({"id": "V1", "callback_id": "x", "state": {"values": {}}}),
                                         JUNK))
    if draw(st.booleans()):
        payload["actions"] = draw(st.one_of(st.just([{"action_id": "x", "block_id": "b", "value": "v"}]), JUNK))
    for _ in range(draw(st.integers(0, 2))):
        payload[draw(st.sampled_from(["team", "user", "channel", "container", "message", "callback_id"]))] = \
            draw(st.one_of(ODD_STRINGS, JUNK))
    if draw(st.integers(0, 6)) == 0:
        payload = draw(JUNK)
    text = json.dumps(payload) if draw(st.integers(0, 8)) else draw(st.sampled_from(["{", "[]", "null", "x"]))
    return "interaction", ("payload=" + urllib.parse.quote(text)).encode(), "application/x-www-form-urlencoded"


REQUESTS = st.one_of(_event_request(), _event_request(), _command_request(), _interaction_request())


def _sign(body: bytes) -> dict[str, str]:
    """Slack's signature over the raw bytes (slack_sdk's own signer wants them to be UTF-8)."""
    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def _draw(n: int) -> list[tuple[str, bytes, str]]:
    """`n` requests, drawn once (deterministically) by hypothesis; the HTTP side sends them all afterwards."""
    drawn: list[tuple[str, bytes, str]] = []

    @settings(max_examples=n, database=None, derandomize=True, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(REQUESTS)
    def collect(request: tuple[str, bytes, str]) -> None:
        drawn.append(request)

    collect()
    return drawn


async def test_malformed_signed_payloads_never_get_a_5xx(easel: Running, database_url: str) -> None:
    requests = _draw(PAYLOADS)
    statuses: collections.Counter[int] = collections.Counter()
    by_kind: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    server_errors: list[tuple[int, bytes]] = []
    sem = asyncio.Semaphore(16)

    async def send(kind: str, body: bytes, content_type: str) -> None:
        async with sem:
            headers = {**_sign(body), "Content-Type": content_type}
            result = await easel.sender.raw(body, headers)
        statuses[result.status] += 1
        by_kind[kind][result.status] += 1
        if result.status >= 500:
            server_errors.append((result.status, body))

    await asyncio.gather(*(send(*r) for r in requests))
    backend = database_url.split(":", 1)[0]
    print(f"\n{backend}: {len(requests)} malformed payloads: {dict(sorted(statuses.items()))}; "
          + "; ".join(f"{k} {dict(sorted(v.items()))}" for k, v in sorted(by_kind.items())))
    for loop in easel.easel.worker._loops:
        assert not loop.done(), "a worker loop died"
    assert not server_errors, (
        f"{len(server_errors)} of {len(requests)} got a 5xx, for example:\n"
        + "\n".join(f"{status}: {body[:300]!r}" for status, body in server_errors[:8])
    )
    # Whatever was stored as a job ends (a notice, an image, or a failure told to the user).
    await wait_until(lambda: easel.easel.worker.busy == 0, timeout=60, what="the worker to go idle")


def _mention_with(**changes: Any) -> dict[str, Any]:
    event = _event("app_mention", "<@UBOT> a fox")
    event.update(changes)
    return event


REPORTED = {
    "channel longer than its column": _envelope(_mention_with(channel="C" + "0" * 40)),
    "user longer than its column": _envelope(_mention_with(user="U" + "0" * 40)),
    "ts longer than its column": _envelope(_mention_with(ts="1700000000." + "0" * 40)),
    "NUL in channel": _envelope(_mention_with(channel="C0001\x00")),
    "NUL in thread_ts": _envelope(_mention_with(thread_ts="1700000000.000100\x00")),
    "NUL in team_id": {**_envelope(_mention_with()), "team_id": "T0001\x00", "authorizations": None},
    "team_id longer than its column": {**_envelope(_mention_with()), "team_id": "T" * 40, "authorizations": None},
    "lone surrogate in the text": _envelope(_mention_with(text="<@UBOT> a fox \ud800")),
    "lone surrogate in a file name": _envelope(_mention_with(files=[{"id": "F1", "name": "\udfff.png",
                                                                     "mimetype": "image/png", "size": 5}])),
    "event is a list": {**_envelope(None), "event": []},
    "event is a string": {**_envelope(None), "event": "app_mention"},
}


async def test_the_reported_malformed_payloads_are_refused_or_ignored(easel: Running) -> None:
    for name, payload in REPORTED.items():
        body = json.dumps(payload).encode()
        result = await easel.sender.raw(body, {**_sign(body), "Content-Type": "application/json"})
        assert result.status < 500, (name, result.status)
    view = {"type": "view_submission", "team": {"id": "T0001"}, "user": {"id": "U0001"}, "api_app_id": "A0001",
            "view": {"id": "V1", "callback_id": "x"}}
    body = ("payload=" + urllib.parse.quote(json.dumps(view))).encode()
    result = await easel.sender.raw(body, {**_sign(body), "Content-Type": "application/x-www-form-urlencoded"})
    assert result.status < 500, ("view_submission without a view type", result.status)
    shortcut = {"type": "message_action", "team": {"id": "T0001"}, "user": {"id": "U0001"}, "api_app_id": "A0001",
                "trigger_id": "1.2.3", "view": None, "actions": None}  # found by the property test above
    body = ("payload=" + urllib.parse.quote(json.dumps(shortcut))).encode()
    result = await easel.sender.raw(body, {**_sign(body), "Content-Type": "application/x-www-form-urlencoded"})
    assert result.status < 500, ("a shortcut with a null view", result.status)
    command = {"team_id": "T0001", "channel_id": "C" * 40, "user_id": "U0001", "command": "/imagine",
               "text": "a fox", "trigger_id": "1.2.3", "response_url": "http://127.0.0.1:9/r"}
    body = urllib.parse.urlencode(command).encode()
    result = await easel.sender.raw(body, {**_sign(body), "Content-Type": "application/x-www-form-urlencoded"})
    assert result.status == 200 and "without its team, channel" in result.body_text
    jobs = await easel.store.jobs.all()
    assert [j.text for j in jobs] == ["a fox \ufffd", "a fox"]  # the surrogate, replaced; the file's name too
