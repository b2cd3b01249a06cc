"""A lean reader for the Responses API's event stream, for streams that carry multi-megabyte images.

The openai SDK's own stream decoding parses every event into typed objects; an image turn sends its base64
result twice (in `response.output_item.done` and again in `response.completed`), and measured on this machine
that decoding costs several times what decoding and uploading the image itself does. Here small events are
parsed, large ones Easel does not need are skipped as they stream by (only their last bytes are kept, for the
sequence number), and a large event it needs (the final response) is read only if `admit()` says there is
room; otherwise the stream ends there and the caller fetches the response later, so memory stays bounded
however many generations finish at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

SMALL = 64 * 1024
FINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
_TYPE = re.compile(rb'"type"\s*:\s*"([^"]+)"')
_SEQ = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


@dataclass(frozen=True)
class Event:
    type: str
    sequence_number: int | None
    data: dict[str, Any] | None  # None for a large event that was skipped


def _head_type(head: bytes) -> str:
    for line in head.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
    m = _TYPE.search(head)
    return m.group(1).decode("utf-8", "replace") if m else ""


def _last_seq(tail: bytes) -> int | None:
    found = _SEQ.findall(tail)
    return int(found[-1]) if found else None


def parse_event(raw: bytes) -> Event | None:
    """One SSE event block (without its blank-line terminator) as an Event; None for comments and keep-alives."""
    hint = ""
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            hint = line[6:].strip().decode("utf-8", "replace")
    if not data:
        return None
    payload = b"\n".join(data)
    if payload.strip() == b"[DONE]":
        return None
    body = json.loads(payload)
    if not isinstance(body, dict):
        return None
    seq = body.get("sequence_number")
    return Event(str(body.get("type") or hint), seq if isinstance(seq, int) else None, body)


DEFERRED = "easel.deferred"


async def events(
    chunks: AsyncIterator[bytes],
    *,
    admit: Callable[[], Awaitable[bool]],
    wanted: frozenset[str] = FINAL,
    small: int = SMALL,
) -> AsyncIterator[Event]:
    """Split a byte stream into events. Large events whose type is not in `wanted` come out with data=None.

    Before a large wanted event is read, `admit()` is awaited: True reads it; False ends the stream here with
    an event of type DEFERRED (the caller fetches that payload later, when it has room for it)."""
    buf = bytearray()
    skipping: str | None = None  # type of the large event being skipped
    head_seq: int | None = None
    tail = b""
    searched = 0  # bytes at the start of buf known to hold no event end (so a large event is scanned once)
    admitted = False
    async for chunk in chunks:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if skipping is not None:
            if tail.endswith(b"\n") and chunk.startswith(b"\n"):  # the blank line straddles two chunks
                end, rest = 0, chunk[1:]
            else:
                end = chunk.find(b"\n\n")
                if end < 0:
                    tail = (tail + chunk[-256:])[-256:]
                    continue
                tail, rest = (tail + chunk[max(0, end - 256):end])[-256:], chunk[end + 2:]
            seq = _last_seq(tail)
            yield Event(skipping, seq if seq is not None else head_seq, None)
            skipping, chunk = None, rest
        buf += chunk
        while True:
            end = buf.find(b"\n\n", searched)
            if end >= 0:
                searched = 0
                if end > small and (kind := _head_type(bytes(buf[:1024]))) not in wanted:
                    seq = _last_seq(bytes(buf[max(0, end - 256):end]))
                    yield Event(kind, seq if seq is not None else _last_seq(bytes(buf[:1024])), None)
                    del buf[: end + 2]
                    continue
                raw = bytes(buf[:end])
                del buf[: end + 2]
                event = parse_event(raw)
                if event is not None:
                    yield event
                continue
            searched = max(0, len(buf) - 1)
            if len(buf) > small:
                head = bytes(buf[:1024])
                kind = _head_type(head)
                if kind not in wanted:
                    skipping, head_seq, tail = kind, _last_seq(head), bytes(buf[-256:])
                    buf.clear()
                    searched = 0
                elif not admitted:
                    if not await admit():  # no room for it now: stop reading, hold nothing
                        yield Event(DEFERRED, None, None)
                        return
                    admitted = True
            break
    if skipping is None and buf.strip():
        event = parse_event(bytes(buf))
        if event is not None:
            yield event
