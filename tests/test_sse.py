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


@st.composite
def _streams(draw):
    """A stream of small and large events, cut into chunks at arbitrary places."""
    kinds = ["response.created", "response.output_item.done", "response.completed", "response.in_progress"]
    events = []
    for seq in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(kinds))
        big = draw(st.booleans())
        body = {"type": kind, "sequence_number": seq,
                "item": {"type": "image_generation_call", "result": BIG if big else "c21hbGw="}}
        events.append(body)
    data = _sse(*events, crlf=draw(st.booleans()), event_lines=draw(st.booleans()))
    blanks = [i for i in range(len(data) - 1) if data[i:i + 2] in (b"\n\n", b"\r\n")]
    near_ends = st.sampled_from(blanks).flatmap(lambda i: st.sampled_from([i, i + 1, i + 2])) if blanks \
        else st.integers(1, max(1, len(data) - 1))
    cuts = sorted({c for c in draw(st.lists(st.integers(1, max(1, len(data) - 1)) | near_ends, max_size=12))
                   if 0 < c < len(data)})
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
    return events, chunks


@settings(max_examples=80, deadline=None)
@given(stream=_streams(), wanted=st.sets(st.sampled_from(["response.output_item.done", "response.completed"])))
def test_events_come_out_whole_however_the_stream_is_cut(stream, wanted) -> None:
    events, chunks = stream

    async def pieces():
        for c in chunks:
            yield c

    async def admit() -> None:
        return None

    async def read():
        return [e async for e in sse.events(pieces(), admit=admit, wanted=frozenset(wanted))]

    got = asyncio.run(read())
    assert [(e.type, e.sequence_number) for e in got] == [(e["type"], e["sequence_number"]) for e in events]
    for e, sent in zip(got, events, strict=True):
        large = sent["item"]["result"] == BIG
        if large and sent["type"] not in wanted:
            assert e.data is None  # skipped unparsed
        else:
            expected = IMAGE if large else "c21hbGw="
            assert e.data is not None and e.data["item"]["result"] == expected


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("wanted", [True, False])
async def test_a_large_event_ending_exactly_at_a_chunk_edge(crlf, wanted) -> None:
    """The blank line that ends a large event is split between two chunks, for each way it can fall."""
    big = {"type": "response.completed", "sequence_number": 1, "response": {"output": [{"result": BIG}]}}
    after = {"type": "response.in_progress", "sequence_number": 2}
    data = _sse(big, after, crlf=crlf)
    blank = data.index(b"\r\n\r\n" if crlf else b"\n\n")
    for cut in range(blank, blank + (5 if crlf else 3)):
        async def pieces(cut=cut):
            for i in range(0, cut, 40_000):  # a large event arrives in many chunks
                yield data[i:min(i + 40_000, cut)]
            yield data[cut:]

        async def admit() -> None:
            return None

        kinds = frozenset({"response.completed"}) if wanted else frozenset()
        got = [e async for e in sse.events(pieces(), admit=admit, wanted=kinds)]
        assert [(e.type, e.sequence_number) for e in got] == [("response.completed", 1), ("response.in_progress", 2)]
        assert got[1].data == after
        assert (got[0].data is not None) is wanted


def _lean_answer(draw) -> dict:
    """A final event with images (large and small results, a null one) and text that quotes "result"."""
    output = []
    for i in range(draw(st.integers(1, 3))):
        result = draw(st.sampled_from([BIG, BIG[:5000], "c21hbGw=", None]))
        output.append({"type": "image_generation_call", "id": f"ig_{i}", "status": "completed", "result": result,
                       "revised_prompt": draw(st.sampled_from(['a "result": "x"', "plain", 'ends with \\"']))})
    output.append({"type": "message", "content": [{"type": "output_text", "text": 'the "result" : "yes"'}]})
    return {"type": "response.completed", "sequence_number": 7, "response": {"id": "resp_1", "output": output}}


@st.composite
def _lean_streams(draw):
    final = _lean_answer(draw)
    after = {"type": "response.done.extra", "sequence_number": 8}
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (", ", " : ")]))
    data = b"".join(b"data: " + json.dumps(e, separators=separators).encode() + b"\n\n" for e in (final, after))
    keys = [i for i in range(len(data)) if data.startswith(b'"result"', i)]
    near_keys = st.sampled_from(keys).flatmap(lambda i: st.integers(i - 2, i + 14)) if keys else st.just(1)
    cuts = sorted({c for c in draw(st.lists(st.integers(1, len(data) - 1) | near_keys, max_size=20))
                   if 0 < c < len(data)})
    small_chunks = draw(st.booleans())
    if small_chunks:
        cuts = sorted(set(cuts) | set(range(500, len(data), 500)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
    always_lean = small_chunks and data.index(b"\n\n") > 2048  # never whole within its first kilobyte
    return final, after, chunks, always_lean


@settings(max_examples=120, deadline=None)
@given(stream=_lean_streams())
def test_a_lean_event_comes_out_without_its_results_however_the_stream_is_cut(stream) -> None:
    final, after, chunks, always_lean = stream

    async def pieces():
        for c in chunks:
            yield c

    async def admit() -> None:
        raise AssertionError("a lean event holds no image: it needs no room")

    async def read():
        return [e async for e in sse.events(pieces(), admit=admit, wanted=sse.FINAL, lean=sse.FINAL)]

    got, tail = asyncio.run(read())
    assert tail.data == after
    assert (got.type, got.sequence_number) == ("response.completed", 7)
    sent, came = final["response"]["output"], got.data["response"]["output"]
    assert len(came) == len(sent)
    for s, c in zip(sent, came, strict=True):
        if s["type"] != "image_generation_call":
            assert c == s
            continue
        assert {k: v for k, v in c.items() if k != "result"} == {k: v for k, v in s.items() if k != "result"}
        if s["result"] is None:
            assert c["result"] is None
        elif always_lean:
            assert c["result"] == sse.SENT_BEFORE
        else:  # possibly whole within its first kilobyte: then parsed as usual
            assert c["result"] in (sse.SENT_BEFORE, s["result"], base64.b64decode(s["result"]))


async def test_a_lean_event_keeps_none_of_the_bytes_it_leaves_out() -> None:
    """Reading the final event lean holds a few hundred bytes, not the megabytes of its images."""
    final = {"type": "response.completed", "sequence_number": 1,
             "response": {"id": "r", "output": [{"type": "image_generation_call", "id": "ig_1", "result": BIG * 8}]}}
    data = _sse(final)
    lean = sse._Lean()
    ends = [lean.feed(data[i:i + 16384]) for i in range(0, len(data), 16384)]
    assert ends[:-1] == [-1] * (len(ends) - 1) and ends[-1] >= 0
    assert len(lean.kept) < 400
    assert sse.parse_event(lean.kept, ends[-1]).data["response"]["output"][0]["result"] == sse.SENT_BEFORE
