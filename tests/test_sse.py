"""bot.sse: splitting the Responses event stream, skipping large events, and holding back the one it needs."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot import sse


def _sse(*events: dict, crlf: bool = False, event_lines: bool = True) -> bytes:
    out = b""
    for e in events:
        block = (f"event: {e['type']}\n" if event_lines else "") + "data: " + json.dumps(e) + "\n\n"
        out += block.encode()
    return out.replace(b"\n", b"\r\n") if crlf else out


async def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def _collect(data: bytes, size: int, **kw) -> list[sse.Event]:
    admitted = []

    async def admit() -> bool:
        admitted.append(True)
        return True

    return [e async for e in sse.events(_chunks(data, size), admit=admit, **kw)]


BIG = "A" * 200_000
STREAM = (
    {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "status": "queued"}},
    {"type": "response.output_item.done", "sequence_number": 1, "item": {"result": BIG}},
    {"type": "response.output_text.delta", "sequence_number": 2, "delta": "hi"},
    {"type": "response.completed", "sequence_number": 3, "response": {"id": "resp_1", "output": [BIG]}},
)


@pytest.mark.parametrize("size", [1, 3, 7])
async def test_small_events_split_at_every_byte(size) -> None:
    small = (STREAM[0], STREAM[2], {"type": "response.in_progress", "sequence_number": 5})
    for crlf in (False, True):
        events = await _collect(_sse(*small, crlf=crlf), size)
        assert [e.data for e in events] == list(small)


@pytest.mark.parametrize("size", [4096, 65536, 10_000_000])
@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("event_lines", [False, True])
async def test_events_skip_large_unwanted_ones_and_keep_the_final(size, crlf, event_lines) -> None:
    events = await _collect(_sse(*STREAM, crlf=crlf, event_lines=event_lines), size)
    assert [e.type for e in events] == [s["type"] for s in STREAM]
    assert [e.sequence_number for e in events] == [0, 1, 2, 3]
    assert events[0].data["response"]["id"] == "resp_1"
    assert events[1].data is None  # the large image event was skipped, not parsed
    assert events[2].data["delta"] == "hi"
    assert events[3].data["response"]["output"] == [BIG]  # the final one was read whole


async def test_a_large_wanted_event_is_read_only_after_admission() -> None:
    data = _sse(*STREAM)
    gate = asyncio.Event()
    pulled = []

    async def chunks():
        for i in range(0, len(data), 4096):
            pulled.append(i)
            yield data[i:i + 4096]

    async def admit() -> bool:
        await gate.wait()
        return True

    seen = []

    async def read() -> None:
        async for e in sse.events(chunks(), admit=admit):
            seen.append(e.type)

    task = asyncio.create_task(read())
    for _ in range(200):  # let the reader run as far as it can without admission
        await asyncio.sleep(0)
    assert seen == ["response.created", "response.output_item.done", "response.output_text.delta"]
    before = len(pulled)
    assert before * 4096 < len(data)  # it stopped pulling bytes: the rest stays with the server
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(pulled) == before
    gate.set()
    await asyncio.wait_for(task, 5)
    assert seen[-1] == "response.completed"


async def test_a_large_wanted_event_without_room_ends_the_stream_deferred() -> None:
    pulled = []
    data = _sse(*STREAM)

    async def chunks():
        for i in range(0, len(data), 4096):
            pulled.append(i)
            yield data[i:i + 4096]

    async def no_room() -> bool:
        return False

    events = [e async for e in sse.events(chunks(), admit=no_room)]
    assert [e.type for e in events][-1] == sse.DEFERRED
    assert "response.completed" not in [e.type for e in events]
    assert len(pulled) * 4096 < len(data)  # the payload was left unread


def test_parse_event_handles_comments_multiline_data_and_done() -> None:
    assert sse.parse_event(b": keep-alive") is None
    assert sse.parse_event(b"data: [DONE]") is None
    e = sse.parse_event(b'event: x\ndata: {"type": "response.in_progress",\ndata: "sequence_number": 4}')
    assert e == sse.Event("response.in_progress", 4, {"type": "response.in_progress", "sequence_number": 4})
    assert sse.parse_event(b'event: error\ndata: {"message": "m"}').type == "error"
