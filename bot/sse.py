"""A lean reader for the Responses API's answers, which carry multi-megabyte base64 images.

An image turn's event stream sends its base64 result twice (in `response.output_item.done` and again in
`response.completed`). Parsing that into typed objects, or even into plain JSON, costs more CPU than decoding
and uploading the image itself. So here:

- event boundaries are found with single-byte searches (`memchr`), never by scanning for a two-byte needle;
- large events Easel does not need stream by unparsed (only their last bytes are kept, for the sequence
  number);
- a large event Easel does need is read only once `admit()` returns (the caller waits there for room, and
  the unread answer waits in the socket meanwhile), and is parsed by `loads`, which decodes each large base64
  string straight from the received bytes and parses JSON only for what is left around them;
- a large event whose images the caller has already (the final one repeats every image of the answer) is read
  "lean": the value of each "result" string is left out as it streams by (`SENT_BEFORE` stands in for it),
  so only the JSON around the images is kept, and nothing of their megabytes is copied or decoded again.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pybase64

SMALL = 64 * 1024
_HEAD = 1024  # an event's type is known from its first bytes
FINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
_TYPE = re.compile(rb'"type"\s*:\s*"([^"]+)"')
_SEQ = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
_AFTER_KEY = re.compile(rb'\s*:\s*"')  # between the key "result" and its string value
_BLOB = "\x00easel-blob-"  # stands in for a large base64 string while the rest is parsed as JSON
SENT_BEFORE = "\x00easel-sent-before"  # a "result" left out of a lean event (its image came in an earlier one)
_SENT_BEFORE = b"\\u0000easel-sent-before"
_AFTER_KEY_SO_FAR = re.compile(rb"\s*(?::\s*)?")  # what may come before the rest of `_AFTER_KEY` arrives


@dataclass(frozen=True)
class Event:
    type: str
    sequence_number: int | None
    data: dict[str, Any] | None  # None for a large event that was skipped


def loads(payload: bytes | bytearray, start: int = 0, end: int | None = None) -> Any:
    """`json.loads(payload[start:end])`, except that each large `"result"` string (an image's base64) comes
    out as the decoded bytes. The base64 is decoded where it lies; only the JSON around it is parsed.

    Falls back to a plain `json.loads` when a large result holds anything but base64 (escapes, say)."""
    end = len(payload) if end is None else end
    view = memoryview(payload)
    pieces: list[bytes | memoryview] = []
    blobs: list[memoryview] = []
    pos = look = start
    while (key := payload.find(b'"result"', look, end)) >= 0:
        look = key + 8  # (inside a string, the text "result" is \"result\": no match)
        found = _AFTER_KEY.match(payload, look, end)
        if found is None:
            continue
        value = found.end()
        close = payload.find(b'"', value, end)
        if close < 0:
            break
        look = close + 1  # never scan the value itself for keys
        if close - value < SMALL:
            continue
        if payload.find(b"\\", value, close) >= 0:
            return json.loads(bytes(view[start:end]))
        pieces += [view[pos:value], f"\\u0000easel-blob-{len(blobs)}".encode()]
        blobs.append(view[value:close])
        pos = close
    if not blobs:
        return json.loads(bytes(view[start:end]))
    pieces.append(view[pos:end])
    body = json.loads(b"".join(pieces))
    decoded: dict[str, bytes] = {}
    for i, blob in enumerate(blobs):
        try:
            decoded[f"{_BLOB}{i}"] = pybase64.b64decode(blob, validate=True)
        except binascii.Error as e:
            raise ValueError(f"an image in the answer is not valid base64: {e}") from None
    return _swap(body, decoded)


def _swap(value: Any, decoded: dict[str, bytes]) -> Any:
    """Put each decoded image back where its stand-in is (always as the value of a "result" key)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "result" and isinstance(item, str) and item in decoded:
                value[key] = decoded[item]
            elif isinstance(item, dict | list):
                _swap(item, decoded)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                _swap(item, decoded)
    return value


class _Lean:
    """Gathers one event as it streams by, leaving out the value of every "result" string (base64 holds no
    quote: the value ends at the next one). Only the JSON around the values is kept, in `kept`."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self._in_value = False
        self._look = 0  # where in `kept` to search for the next "result" key
        self._searched = 0  # bytes at the start of `kept` known to hold no event end

    def feed(self, chunk: bytes) -> int:
        """Take the next bytes. Returns where the event ends in `kept` (its blank line; what follows is the
        start of the next event), or -1 while it goes on."""
        while chunk:
            if self._in_value:
                close = chunk.find(b'"')
                if close < 0:
                    return -1  # all of it is the value: left out
                self.kept += _SENT_BEFORE
                self._in_value = False
                self._look = len(self.kept) + 1
                chunk = chunk[close:]
                continue
            self.kept += chunk
            chunk = b""
            end = _blank_line(self.kept, self._searched)
            value = self._value_start(len(self.kept) if end < 0 else end, complete=end >= 0)
            if value >= 0:
                chunk = bytes(self.kept[value:])
                del self.kept[value:]
                self._in_value = True
                self._searched = min(self._searched, value)
                continue
            if end >= 0:
                return end
            self._searched = max(0, len(self.kept) - 1)
        return -1

    def _value_start(self, limit: int, *, complete: bool) -> int:
        """Where the value of the next "result" key before `limit` starts, or -1 (for now)."""
        kept = self.kept
        while (key := kept.find(b'"result"', self._look, limit)) >= 0:
            self._look = key + 8  # (inside a string, the text "result" is \"result\": no match)
            found = _AFTER_KEY.match(kept, key + 8, limit)
            if found is not None:
                return found.end()
            if not complete and _AFTER_KEY_SO_FAR.fullmatch(kept, key + 8, limit):
                self._look = key  # the key's colon or the value's quote has not arrived yet
                return -1
        self._look = max(self._look, limit - 7)  # a key may begin in the last bytes and end in the next ones
        return -1


def _head_type(head: bytes) -> str:
    for line in head.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
    m = _TYPE.search(head)
    return m.group(1).decode("utf-8", "replace") if m else ""


def _last_seq(tail: bytes) -> int | None:
    found = _SEQ.findall(tail)
    return int(found[-1]) if found else None


def _blank_line(buf: bytes | bytearray, start: int) -> int:
    """Where the first "\\n\\n" at or after `start` begins, or -1 (single-byte searches only: a two-byte
    needle is searched several times slower, and the events searched here are megabytes long)."""
    i = buf.find(b"\n", start)
    while 0 <= i < len(buf) - 1:
        if buf[i + 1] == 0x0A:
            return i
        i = buf.find(b"\n", i + 1)
    return -1


def parse_event(raw: bytes | bytearray, end: int | None = None) -> Event | None:
    """One SSE event block, `raw[:end]` (without its blank-line terminator), as an Event; None for comments
    and keep-alives. The block's data is parsed where it lies (no copy of a large event is made)."""
    end = len(raw) if end is None else end
    view = memoryview(raw)
    hint = ""
    data: list[tuple[int, int]] = []  # where each data line's value lies in raw
    pos = 0
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        nl = end if nl < 0 else nl
        if raw.startswith(b"data:", pos, nl):
            data.append((pos + 6 if raw.startswith(b" ", pos + 5, nl) else pos + 5, nl))
        elif raw.startswith(b"event:", pos, nl):
            hint = bytes(view[pos + 6 : nl]).strip().decode("utf-8", "replace")
        pos = nl + 1
    if not data:
        return None
    if len(data) > 1:  # one value over several lines: join them (never the case for the large events)
        raw = b"\n".join(view[a:b] for a, b in data)
        data = [(0, len(raw))]
    [(first, last)] = data
    if bytes(view[first : min(last, first + 16)]).strip() == b"[DONE]":
        return None
    body = loads(raw, first, last)
    if not isinstance(body, dict):
        return None
    seq = body.get("sequence_number")
    return Event(str(body.get("type") or hint), seq if isinstance(seq, int) else None, body)


async def events(
    chunks: AsyncIterator[bytes],
    *,
    admit: Callable[[], Awaitable[None]],
    wanted: frozenset[str] = FINAL,
    lean: frozenset[str] = frozenset(),
    small: int = SMALL,
    optional: Mapping[str, Callable[[], bool]] | None = None,
) -> AsyncIterator[Event]:
    """Split a byte stream into events. Large events whose type is not in `wanted` come out with data=None.

    Before a wanted event is read past its first kilobyte (unless it is whole by then), `admit()` is awaited:
    the caller may wait there until it has room for it, and the rest of the answer waits in the socket.
    A large event is gathered as the chunks that carry it and joined once, when it is whole.

    An event of a type in `lean` that is not whole within its first kilobyte is read lean, with no `admit()`
    (it holds no image): the value of each of its "result" strings comes out as `SENT_BEFORE`.

    A large event of a type in `optional` is read (without `admit()`) only if its callable, asked as the event
    begins, says the caller has room for it now; otherwise it is skipped as an unwanted one."""
    optional = optional or {}
    buf = bytearray()  # the start of the current event, while it is small
    parts: list[bytes] = []  # a large wanted event being gathered (mode "collect")
    leaning: _Lean | None = None  # a lean event being gathered (mode "lean")
    skipping: str | None = None  # type of the large event being skipped (mode "skip")
    head_seq: int | None = None
    tail = b""
    searched = 0  # bytes at the start of buf known to hold no event end (so a large event is scanned once)
    async for chunk in chunks:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        while chunk:
            if skipping is not None:
                if tail.endswith(b"\n") and chunk.startswith(b"\n"):  # the blank line straddles two chunks
                    end, rest = 0, chunk[1:]
                else:
                    end = _blank_line(chunk, 0)
                    if end < 0:
                        tail = (tail + chunk[-256:])[-256:]
                        break
                    tail, rest = (tail + chunk[max(0, end - 256):end])[-256:], chunk[end + 2:]
                seq = _last_seq(tail)
                yield Event(skipping, seq if seq is not None else head_seq, None)
                skipping, chunk = None, rest
                continue
            if leaning is not None:
                end = leaning.feed(chunk)
                if end < 0:
                    break
                gathered, leaning = leaning.kept, None
                chunk = bytes(gathered[end + 2:])
                event = parse_event(gathered, end)
                if event is not None:
                    yield event
                continue
            if parts:
                if parts[-1].endswith(b"\n") and chunk.startswith(b"\n"):  # the blank line straddles them
                    raw, end, rest = b"".join(parts), sum(map(len, parts)) - 1, chunk[1:]
                else:
                    found = _blank_line(chunk, 0)
                    if found < 0:
                        parts.append(chunk)
                        break
                    parts.append(chunk[:found])
                    raw = b"".join(parts)
                    end, rest = len(raw), chunk[found + 2:]
                parts = []
                event = parse_event(raw, end)
                del raw
                if event is not None:
                    yield event
                chunk = rest
                continue
            buf += chunk
            chunk = b""
            while True:
                end = _blank_line(buf, searched)
                if end >= 0:
                    searched = 0
                    if end > small and ((kind := _head_type(bytes(buf[:_HEAD]))) not in wanted
                                        or (kind in optional and not optional[kind]())):
                        seq = _last_seq(bytes(buf[max(0, end - 256):end]))
                        yield Event(kind, seq if seq is not None else _last_seq(bytes(buf[:_HEAD])), None)
                        del buf[: end + 2]
                        continue
                    event = parse_event(buf, end)
                    buf = buf[end + 2 :]  # a new buffer: the parsed one may still be viewed while it is freed
                    if event is not None:
                        yield event
                    continue
                searched = max(0, len(buf) - 1)
                if len(buf) > _HEAD:
                    head = bytes(buf[:_HEAD])
                    kind = _head_type(head)
                    if kind in lean:  # gathered as it comes, without the values it repeats
                        leaning, chunk, buf, searched = _Lean(), bytes(buf), bytearray(), 0
                    elif kind in optional and not optional[kind]():
                        skipping, head_seq, tail = kind, _last_seq(head), bytes(buf[-256:])
                        buf.clear()
                        searched = 0
                    elif kind in wanted:  # wait for room before reading on; the answer's bytes stay in the socket
                        if kind not in optional:
                            await admit()
                        parts, buf, searched = [bytes(buf)], bytearray(), 0
                    elif len(buf) > small:
                        skipping, head_seq, tail = kind, _last_seq(head), bytes(buf[-256:])
                        buf.clear()
                        searched = 0
                break
    if parts:
        buf = bytearray(b"".join(parts))
    if leaning is not None:
        buf = leaning.kept
    if skipping is None and buf.strip():
        event = parse_event(buf)
        if event is not None:
            yield event
