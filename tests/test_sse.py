"""bot.sse: splitting the Responses event stream, skipping large events, holding back the one it needs, and
parsing large answers with their images decoded in place."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    async def admit() -> None:
        return None

    return [e async for e in sse.events(_chunks(data, size), admit=admit, **kw)]


IMAGE = bytes(range(256)) * 600  # 150 KB: its base64 is a "large" string
BIG = base64.b64encode(IMAGE).decode()
STREAM = (
    {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "status": "queued"}},
    {"type": "response.output_item.done", "sequence_number": 1, "item": {"result": BIG}},
    {"type": "response.output_text.delta", "sequence_number": 2, "delta": "hi"},
    {"type": "response.completed", "sequence_number": 3,
     "response": {"id": "resp_1", "output": [{"type": "image_generation_call", "result": BIG}]}},
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
    # the final one was read whole, its image decoded
    assert events[3].data["response"]["output"] == [{"type": "image_generation_call", "result": IMAGE}]


async def test_a_large_wanted_event_is_read_only_after_admission() -> None:
    data = _sse(*STREAM)
    gate = asyncio.Event()
    pulled = []

    async def chunks():
        for i in range(0, len(data), 4096):
            pulled.append(i)
            yield data[i:i + 4096]

    async def admit() -> None:
        await gate.wait()

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


def test_parse_event_handles_comments_multiline_data_and_done() -> None:
    assert sse.parse_event(b": keep-alive") is None
    assert sse.parse_event(b"data: [DONE]") is None
    e = sse.parse_event(b'event: x\ndata: {"type": "response.in_progress",\ndata: "sequence_number": 4}')
    assert e == sse.Event("response.in_progress", 4, {"type": "response.in_progress", "sequence_number": 4})
    assert sse.parse_event(b'event: error\ndata: {"message": "m"}').type == "error"


# -- loads: large base64 results decoded where they lie, the JSON around them parsed as usual --------------

def _reference(text: str):
    """What `sse.loads` must give: json.loads, with each large "result" string base64-decoded."""
    def swap(v):
        if isinstance(v, dict):
            return {k: (base64.b64decode(x) if k == "result" and isinstance(x, str) and len(x) >= sse.SMALL
                        else swap(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v
    return swap(json.loads(text))


_tricky_text = st.sampled_from([sse._BLOB + "0", '"result":"', '\\"result\\":\\"', "\\", '"', "é", "\u0000", "plain"])
_small = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | _tricky_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _answers(draw):
    images = draw(st.lists(st.binary(min_size=1, max_size=64).map(lambda b: b * (60_000 // len(b) + 1)),
                           min_size=0, max_size=3))
    output = [{"type": "image_generation_call", "revised_prompt": draw(_small),
               "result": base64.b64encode(img).decode()} for img in images]
    output.insert(draw(st.integers(0, len(output))), {"type": "message", "content": draw(_small)})
    small_result = {"type": "image_generation_call", "result": base64.b64encode(b"tiny").decode()}
    return {"type": "response.completed", "extra": draw(_small),
            "response": {"output": [*output, small_result], "usage": draw(_small)}}


@settings(max_examples=60, deadline=None)
@given(answer=_answers(), spaced=st.booleans())
def test_loads_matches_json_with_images_decoded(answer, spaced) -> None:
    text = json.dumps(answer, separators=(", ", ": ") if spaced else (",", ":"))
    assert sse.loads(text.encode()) == _reference(text)
    padded = b"xx" + text.encode() + b"yy"
    assert sse.loads(bytearray(padded), 2, len(padded) - 2) == _reference(text)


def test_loads_falls_back_on_escapes_and_rejects_bad_base64() -> None:
    escaped = json.dumps({"result": BIG}).replace("/", "\\/")  # JSON may escape "/"
    assert "\\/" in escaped
    assert sse.loads(escaped.encode()) == {"result": BIG}  # parsed as plain JSON: left as text, not decoded
    with pytest.raises(ValueError):
        sse.loads(json.dumps({"result": "*" * sse.SMALL}).encode())


def test_a_large_final_event_comes_out_with_its_image_decoded() -> None:
    event = {"type": "response.completed", "sequence_number": 7,
             "response": {"output": [{"type": "image_generation_call", "result": BIG, "revised_prompt": "p"}]}}
    raw = bytearray(_sse(event).rstrip(b"\n"))
    parsed = sse.parse_event(raw)
    assert parsed is not None and parsed.sequence_number == 7
    assert parsed.data["response"]["output"][0] == {"type": "image_generation_call", "result": IMAGE,
                                                    "revised_prompt": "p"}
