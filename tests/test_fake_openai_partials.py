"""The fake OpenAI's partial images (the image tool's `partial_images`), driven by the real ``openai.AsyncOpenAI``
client with strict response validation: how many, their shape and order, their bytes, their cost, their replay
from a background response, and the faults that send them late or too few."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from PIL import Image

from tests.fakes import openai_spec
from tests.fakes.openai_api import (
    IMAGE_OUTPUT_TOKENS,
    PARTIAL_IMAGE_OUTPUT_TOKENS,
    FakeOpenAI,
    Fault,
    default_image_factory,
)

MODEL = "gpt-5.5"
PARTIAL = "response.image_generation_call.partial_image"


def tools(partials: int, **extra: Any) -> list[Any]:
    return [{"type": "image_generation", "model": "gpt-image-2", "size": "1024x1536", "quality": "low",
             "partial_images": partials, **extra}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0,
                           _strict_response_validation=True)
    yield c
    await c.close()


async def _events(client: openai.AsyncOpenAI, text: str, tool: list[Any], **options: Any) -> list[Any]:
    stream = await client.responses.create(model=MODEL, input=text, tools=tool, stream=True, **options)
    return [event async for event in stream]


def _types(events: list[Any]) -> list[str]:
    return [e.type.removeprefix("response.") for e in events]


def _image_gen_output(events: list[Any]) -> int:
    usage = events[-1].response.tool_usage
    assert usage is not None and usage.image_gen is not None
    return usage.image_gen.output_tokens


@pytest.mark.parametrize("partials", [0, 1, 2, 3])
async def test_a_streamed_turn_carries_the_partials_it_asks_for_before_the_image_completes(
    client: openai.AsyncOpenAI, partials: int
) -> None:
    events = await _events(client, "a kite", tools(partials))
    assert _types(events)[:5 + partials + 2] == [
        "created", "in_progress", "output_item.added", "image_generation_call.in_progress",
        "image_generation_call.generating", *["image_generation_call.partial_image"] * partials,
        "image_generation_call.completed", "output_item.done",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    shown = [e for e in events if e.type == PARTIAL]
    item = events[2].item
    assert [p.partial_image_index for p in shown] == list(range(partials))
    for p in shown:
        assert (p.output_index, p.item_id) == (0, item.id)
        assert (p.size, p.quality, p.background, p.output_format) == ("1024x1536", "low", "auto", "png")
    assert _image_gen_output(events) == IMAGE_OUTPUT_TOKENS + PARTIAL_IMAGE_OUTPUT_TOKENS * partials


@pytest.mark.parametrize(("fmt", "pillow"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
async def test_each_partial_is_a_real_full_size_image_of_the_format_unlike_the_final(
    client: openai.AsyncOpenAI, fmt: str, pillow: str
) -> None:
    events = await _events(client, "a kite", tools(2, output_format=fmt, size="1536x1024"))
    final = base64.b64decode(next(e for e in events if e.type == "response.output_item.done").item.result)
    seen = []
    for p in (e for e in events if e.type == PARTIAL):
        data = base64.b64decode(p.partial_image_b64)
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.size) == (pillow, (1536, 1024))
            image.load()
        assert data != final
        seen.append(data)
    assert len(seen) == 2 and seen[0] != seen[1]


async def test_the_partial_factory_makes_them(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    asked: list[tuple[int, int, str, str]] = []

    def factory(width: int, height: int, fmt: str, prompt: str) -> bytes:
        asked.append((width, height, fmt, prompt))
        return default_image_factory(16, 16, fmt, prompt)

    fake.partial_factory = factory
    await _events(client, "a kite", tools(1))
    assert asked == [(1024, 1536, "png", "A detailed rendering of: a kite [partial 0]")]


async def test_two_images_each_get_their_partials_and_the_stream_helper_accepts_them(
    client: openai.AsyncOpenAI,
) -> None:
    events = await _events(client, "a kite [[two]]", tools(2))
    by_item = [(e.output_index, e.partial_image_index) for e in events if e.type == PARTIAL]
    assert by_item == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert _image_gen_output(events) == 2 * IMAGE_OUTPUT_TOKENS + 4 * PARTIAL_IMAGE_OUTPUT_TOKENS
    async with client.responses.stream(model=MODEL, input="a kite [[two]]", tools=tools(3)) as stream:
        final = await stream.get_final_response()
    assert [item.type for item in final.output] == ["image_generation_call"] * 2 + ["message"]


async def test_the_partials_are_what_the_spec_describes(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    for fault in (None, Fault(late_partials=True)):
        if fault is not None:
            fake.add_fault(fault)
        stream = await client.responses.create(model=MODEL, input="a kite", tools=tools(3), stream=True)
        async for event in stream:
            assert openai_spec.validate("ResponseStreamEvent", event.model_dump(exclude_unset=True)) == []


async def test_partials_arrive_while_the_final_image_is_still_being_drawn(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.gate.clear()  # the final image is held back until the test lets it go
    stream = await client.responses.create(model=MODEL, input="a kite", tools=tools(3), stream=True)
    seen: list[str] = []
    async for event in stream:
        seen.append(event.type)
        if seen.count(PARTIAL) == 3:
            break
    (response,) = fake.responses.values()
    sent = [e["type"] for e in response.events]
    assert "response.image_generation_call.completed" not in sent  # all three came before the image was done
    fake.gate.set()
    async for event in stream:
        seen.append(event.type)
    assert seen.index("response.image_generation_call.generating") < seen.index(PARTIAL)
    assert seen.count(PARTIAL) == 3
    assert seen.index("response.image_generation_call.completed") > max(
        i for i, kind in enumerate(seen) if kind == PARTIAL)


async def test_no_partials_without_a_stream_to_carry_them(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="a kite", tools=tools(3))
    assert response.tool_usage is not None and response.tool_usage.image_gen is not None
    assert response.tool_usage.image_gen.output_tokens == IMAGE_OUTPUT_TOKENS
    assert not [e for e in fake.responses[response.id].events if e["type"] == PARTIAL]


async def test_no_partials_for_a_blocked_image_or_a_text_answer(client: openai.AsyncOpenAI) -> None:
    for text in ("a kite [[moderation]]", "[[text]] which style?"):
        events = await _events(client, text, tools(3))
        assert PARTIAL not in [e.type for e in events]


# --------------------------------------------------------------------------- background


async def test_a_background_stream_replays_its_partials_by_sequence_number(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.latency = 0.3
    stream = await client.responses.create(model=MODEL, input="a kite", tools=tools(3), stream=True,
                                           background=True)
    seen = []
    async for event in stream:
        seen.append(event)
        if event.type == PARTIAL:  # the first preview; then the client goes away
            break
    await stream.close()
    response_id = seen[0].response.id
    resumed = await client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
    rest = [event async for event in resumed]
    assert rest[0].sequence_number == seen[-1].sequence_number + 1
    assert [e.partial_image_index for e in rest if e.type == PARTIAL] == [1, 2]

    replay = await client.responses.retrieve(response_id, stream=True, starting_after=0)
    again = [event async for event in replay]
    assert [e.sequence_number for e in again] == list(range(1, len(seen) + len(rest)))
    partials = [e for e in again if e.type == PARTIAL]
    assert [e.partial_image_index for e in partials] == [0, 1, 2]
    assert partials[0].partial_image_b64 == seen[-1].partial_image_b64
    assert _image_gen_output(again) == IMAGE_OUTPUT_TOKENS + 3 * PARTIAL_IMAGE_OUTPUT_TOKENS


async def test_a_background_response_made_without_a_stream_has_them_for_a_later_one(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    created = await client.responses.create(model=MODEL, input="a kite", tools=tools(2), background=True)
    await fake.wait_until(lambda: fake.responses[created.id].status == "completed")
    replay = await client.responses.retrieve(created.id, stream=True)
    events = [event async for event in replay]
    assert [e.partial_image_index for e in events if e.type == PARTIAL] == [0, 1]


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("how", ["marker", "fault"])
async def test_late_partials_come_after_the_images_output_item_done(
    fake: FakeOpenAI, client: openai.AsyncOpenAI, how: str
) -> None:
    text = "a kite"
    if how == "marker":
        text += " [[late_partials]]"
    else:
        fake.add_fault(Fault(late_partials=True, match="kite"))
    events = await _events(client, text, tools(2))
    types = _types(events)
    done = types.index("output_item.done")
    assert types[4:done + 1] == ["image_generation_call.generating", "image_generation_call.completed",
                                 "output_item.done"]
    assert types[done + 1:done + 3] == ["image_generation_call.partial_image"] * 2
    assert types[done + 3] == "output_item.added"  # then the message
    late = [e for e in events if e.type == PARTIAL]
    assert [p.partial_image_index for p in late] == [0, 1] and late[0].item_id == events[2].item.id
    assert _image_gen_output(events) == IMAGE_OUTPUT_TOKENS + 2 * PARTIAL_IMAGE_OUTPUT_TOKENS


async def test_late_partials_with_two_images(client: openai.AsyncOpenAI) -> None:
    events = await _events(client, "a kite [[two]] [[late_partials]]", tools(1))
    order = [(e.type.removeprefix("response."), getattr(e, "output_index", None)) for e in events]
    first_done = order.index(("output_item.done", 0))
    assert order[first_done + 1] == ("image_generation_call.partial_image", 0)
    assert order[first_done + 2] == ("output_item.added", 1)
    second_done = order.index(("output_item.done", 1))
    assert order[second_done + 1] == ("image_generation_call.partial_image", 1)


@pytest.mark.parametrize(("how", "sent"), [("marker", 2), ("fault 1", 1), ("fault 0", 0), ("fault 9", 3)])
async def test_fewer_partials_than_asked(fake: FakeOpenAI, client: openai.AsyncOpenAI, how: str, sent: int) -> None:
    text = "a kite"
    if how == "marker":
        text += " [[fewer_partials]]"
    else:
        fake.add_fault(Fault(partials_sent=int(how.split()[1])))
    events = await _events(client, text, tools(3))
    assert [e.partial_image_index for e in events if e.type == PARTIAL] == list(range(sent))
    assert _image_gen_output(events) == IMAGE_OUTPUT_TOKENS + sent * PARTIAL_IMAGE_OUTPUT_TOKENS


async def test_partial_faults_apply_to_creates_only(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(late_partials=True, route="any"))
    created = await client.responses.create(model=MODEL, input="a kite", tools=tools(1), background=True)
    await fake.wait_until(lambda: fake.responses[created.id].status == "completed")
    events = [e["type"] for e in fake.responses[created.id].events]
    assert events.index(PARTIAL) > events.index("response.output_item.done")  # the create took it
    fake.add_fault(Fault(partials_sent=0, route="any"))
    await client.responses.retrieve(created.id)  # not taken here: it stays queued for a create
    events = await _events(client, "a kite", tools(2))
    assert [e.type for e in events].count(PARTIAL) == 0


async def test_gif_output_takes_no_partial_images(client: openai.AsyncOpenAI) -> None:
    """The SDK's docstring: GIF output does not support partial image streaming (partial_images > 0)."""
    gif = {"model": "gpt-image-2.6-sunburst", "output_format": "gif"}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=MODEL, input="a kite", tools=tools(1, **gif), stream=True)
    assert (caught.value.param, caught.value.code) == ("tools[0].partial_images", "invalid_value")
    events = await _events(client, "a kite", tools(0, **gif))
    assert events[-1].type == "response.completed" and PARTIAL not in [e.type for e in events]
