"""The OpenAI fake, driven by the real ``openai.AsyncOpenAI`` client (with strict response validation)."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest
from PIL import Image

from tests.fakes.openai_api import PNG_SIGNATURE, FakeOpenAI, Fault, default_image_factory, noise_png

MODEL = "gpt-5.5"
TOOLS: list[Any] = [
    {"type": "image_generation", "model": "gpt-image-2", "size": "1024x1536", "quality": "low"},
]
IMAGE_EVENTS = [
    "response.output_item.added",
    "response.image_generation_call.in_progress",
    "response.image_generation_call.generating",
    "response.image_generation_call.completed",
    "response.output_item.done",
]
MESSAGE_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]

ClientFactory = Callable[..., openai.AsyncOpenAI]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def make_client(fake: FakeOpenAI) -> AsyncIterator[ClientFactory]:
    """Build real SDK clients against the fake (no retries unless asked); closes them all afterwards."""
    clients: list[openai.AsyncOpenAI] = []

    def make(**options: Any) -> openai.AsyncOpenAI:
        options.setdefault("api_key", "sk-test")
        options.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI(base_url=fake.base_url, _strict_response_validation=True, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def client(make_client: ClientFactory) -> openai.AsyncOpenAI:
    return make_client()


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(("fmt", "pillow"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP"), ("gif", "GIF")])
@pytest.mark.parametrize("size", [(1024, 1024), (1024, 1536), (3840, 2160), (16, 48)])
def test_default_factory_makes_real_images_of_the_size_and_format(
    fmt: str, pillow: str, size: tuple[int, int]
) -> None:
    data = default_image_factory(*size, fmt, "a fox")
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == (pillow, size)
        image.load()
    assert data != default_image_factory(*size, fmt, "a cat")
    assert data == default_image_factory(*size, fmt, "a fox")


def test_noise_png_is_large_real_and_cached() -> None:
    data = noise_png(1024, 1024)
    assert png_size(data) == (1024, 1024)
    assert 1_500_000 <= len(data) <= 3_300_000
    assert noise_png(1024, 1024) is data


# --------------------------------------------------------------------------- create


async def test_create_returns_image_call(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="a red fox", tools=TOOLS)

    assert response.status == "completed"
    assert response.id.startswith("resp_")
    item = response.output[0]
    assert item.type == "image_generation_call"
    assert item.id.startswith("ig_") and item.status == "completed"
    assert item.result is not None
    image = base64.b64decode(item.result)
    assert image.startswith(PNG_SIGNATURE)
    assert image == fake.image_factory(1024, 1536, "png", "a red fox")
    assert (item.action, item.size) == ("generate", "1024x1536")
    assert (item.output_format, item.quality) == ("png", "low")
    assert item.revised_prompt == "A detailed rendering of: a red fox"
    assert response.output_text == "Here is your image."
    assert [tool.model_dump(exclude_none=True) for tool in response.tools] == TOOLS
    assert response.usage is not None and response.usage.input_tokens_details.cache_write_tokens == 0
    assert response.tool_usage is not None and response.tool_usage.image_gen.output_tokens == 1056
    assert fake.create_requests() == [{"model": MODEL, "input": "a red fox", "tools": TOOLS}]
    assert fake.responses[response.id].status == "completed"


async def test_two_images_jpeg_and_edit_action(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model=MODEL, input="a boat", tools=TOOLS)
    tools: Any = [{"type": "image_generation", "output_format": "jpeg", "size": "auto"}]
    response = await client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "make it night [[two]]"}]}],
        tools=tools,
    )

    calls = [item for item in response.output if item.type == "image_generation_call"]
    assert len(calls) == 2
    assert [c.action for c in calls] == ["edit", "edit"]
    assert calls[1].revised_prompt == "A detailed rendering of: make it night [[two]] (variant 2)"
    images = [base64.b64decode(c.result or "") for c in calls]
    assert all(i.startswith(b"\xff\xd8\xff\xe0") for i in images) and images[0] != images[1]
    assert calls[0].size == "1024x1024"
    assert response.previous_response_id == first.id
    assert response.tool_usage is not None and response.tool_usage.image_gen.output_tokens == 2 * 1056


async def test_input_image_resolves_auto_action_to_edit(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "add a hat"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
                ],
            }
        ],
        tools=[{"type": "image_generation", "action": "auto"}],
    )
    assert response.output[0].type == "image_generation_call"
    assert response.output[0].action == "edit"


async def test_text_answers(client: openai.AsyncOpenAI) -> None:
    asked = await client.responses.create(model=MODEL, input="draw something [[text]]", tools=TOOLS)
    assert [item.type for item in asked.output] == ["message"]
    assert asked.output_text == "What style would you like?"
    assert asked.tool_usage is None

    no_tool = await client.responses.create(model=MODEL, input="hello")
    assert no_tool.output_text == "What style would you like?"

    forced = await client.responses.create(
        model=MODEL, input="hello", tool_choice={"type": "image_generation"}
    )
    assert forced.output[0].type == "image_generation_call"

    long = await client.responses.create(model=MODEL, input="options [[long]]")
    assert len(long.output_text) == 9000
    assert long.output_text.count("\n\n") >= 3


async def test_moderation_failed_item(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="a fight [[moderation]]", tools=TOOLS)

    assert response.status == "completed"
    item = response.output[0]
    assert item.type == "image_generation_call"
    assert item.status == "failed" and item.result is None
    assert item.error is not None and item.error.code == "moderation_blocked"
    assert item.error.moderation_details is not None
    assert item.error.moderation_details.categories == ["violence"]


async def test_moderation_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=MODEL, input="a fight [[moderation400]]", tools=TOOLS)
    assert caught.value.code == "moderation_blocked"
    assert caught.value.type == "image_generation_user_error"
    assert "safety_violations=[violence]" in str(caught.value)


async def test_unknown_image_model_and_transparent_jpeg(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model=MODEL, input="x", tools=[{"type": "image_generation", "model": "gpt-image-9"}]
        )
    assert (caught.value.code, caught.value.param) == ("model_not_found", "tools[0].model")
    assert "The model 'gpt-image-9' does not exist" in caught.value.message

    fake.known_image_models.add("gpt-image-9")
    accepted = await client.responses.create(
        model=MODEL, input="x", tools=[{"type": "image_generation", "model": "gpt-image-9"}]
    )
    assert accepted.status == "completed"

    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model=MODEL,
            input="x",
            tools=[
                {
                    "type": "image_generation",
                    "model": "gpt-image-2.5-flare",
                    "background": "transparent",
                    "output_format": "jpeg",
                },
            ],
        )
    assert caught.value.param == "tools[0].background"


async def test_missing_input_is_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=MODEL, tools=TOOLS)
    assert caught.value.param == "input"


async def test_previous_response_not_found(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model=MODEL, input="x", tools=TOOLS, previous_response_id="resp_nope")
    assert caught.value.code == "previous_response_not_found"
    assert caught.value.param == "previous_response_id"

    kept = await client.responses.create(model=MODEL, input="x", tools=TOOLS)
    fake.forget(kept.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model=MODEL, input="y", tools=TOOLS, previous_response_id=kept.id)

    unstored = await client.responses.create(model=MODEL, input="x", tools=TOOLS, store=False)
    assert unstored.id not in fake.responses
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)


async def test_authentication(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    with pytest.raises(openai.AuthenticationError):
        await make_client(api_key="sk-wrong").responses.create(model=MODEL, input="x", tools=TOOLS)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.base_url}/responses", json={"model": MODEL, "input": "x"}) as answer,
    ):
        assert answer.status == 401
        assert (await answer.json())["error"]["type"] == "invalid_request_error"
    assert fake.responses == {}
    assert len(fake.create_requests()) == 2


# --------------------------------------------------------------------------- streaming


async def test_stream_event_sequence(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model=MODEL, input="a kite", tools=TOOLS, stream=True)
    events = [event async for event in stream]

    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        *IMAGE_EVENTS,
        *MESSAGE_EVENTS,
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = events[2]
    assert added.type == "response.output_item.added" and added.item.type == "image_generation_call"
    assert added.item.status == "in_progress" and added.item.result is None
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.status == "completed"
    assert final.response.output_text == "Here is your image."
    assert final.response.output[0].type == "image_generation_call" and final.response.output[0].result


async def test_stream_helper_accepts_the_sequence(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model=MODEL, input="a kite [[two]]", tools=TOOLS) as stream:
        final = await stream.get_final_response()
    assert [item.type for item in final.output] == ["image_generation_call"] * 2 + ["message"]


async def test_stream_fail_response_and_error_event(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(fail_response=True, code="server_error", message="boom"))
    stream = await client.responses.create(model=MODEL, input="a", tools=TOOLS, stream=True)
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed"
    assert last.response.error is not None and last.response.error.message == "boom"

    fake.add_fault(Fault(error_event=True))
    stream = await client.responses.create(model=MODEL, input="b", tools=TOOLS, stream=True)
    events = [event async for event in stream]
    assert events[-2].type == "response.image_generation_call.generating"
    error = events[-1]
    assert error.type == "error" and error.code == "server_error"


async def test_cut_after_raises_connection_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """A stream cut mid-body makes iteration raise APIConnectionError (incomplete chunked read)."""
    fake.add_fault(Fault(cut_after=3))
    stream = await client.responses.create(model=MODEL, input="a", tools=TOOLS, stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for event in stream:
            seen.append(event.type)
    assert seen == ["response.created", "response.in_progress", "response.output_item.added"]
    (response_id,) = fake.responses
    await fake.wait_until(lambda: fake.responses[response_id].status == "cancelled")


async def test_client_disconnect_cancels_foreground_stream(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.latency = 5.0
    stream = await client.responses.create(model=MODEL, input="a", tools=TOOLS, stream=True)
    async for event in stream:
        if event.type == "response.image_generation_call.generating":
            break
    await stream.close()
    (response_id,) = fake.responses
    await fake.wait_until(lambda: fake.responses[response_id].status == "cancelled", timeout=2)
    assert fake.in_flight == 0


# --------------------------------------------------------------------------- background


async def test_background_stream_then_resume(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.latency = 0.2
    stream = await client.responses.create(
        model=MODEL, input="a lighthouse", tools=TOOLS, stream=True, background=True
    )
    first = await stream.__anext__()
    assert first.type == "response.created"
    assert first.response.status == "queued"
    response_id = first.response.id
    resume_after = first.sequence_number
    async for event in stream:
        resume_after = event.sequence_number
        if event.type == "response.image_generation_call.generating":
            break
    await stream.close()
    assert fake.responses[response_id].status == "in_progress"

    resumed = await client.responses.retrieve(response_id, stream=True, starting_after=resume_after)
    events = [event async for event in resumed]
    assert events[0].sequence_number == resume_after + 1
    assert [e.type for e in events] == [
        "response.image_generation_call.completed",
        "response.output_item.done",
        *MESSAGE_EVENTS,
        "response.completed",
    ]
    all_types = [e["type"] for e in fake.responses[response_id].events]
    assert all_types[:3] == ["response.created", "response.queued", "response.in_progress"]


async def test_background_poll_until_completed(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.latency = 0.2
    created = await client.responses.create(model=MODEL, input="a bridge", tools=TOOLS, background=True)
    assert created.status == "queued"
    assert created.background is True

    await fake.wait_until(lambda: fake.in_flight == 1)
    polled = await client.responses.retrieve(created.id)
    assert polled.status in ("queued", "in_progress")
    while polled.status != "completed":
        seen = polled.status
        await fake.wait_until(lambda seen=seen: fake.responses[created.id].status != seen, timeout=2)
        polled = await client.responses.retrieve(created.id)
    assert polled.output[0].type == "image_generation_call"
    assert fake.in_flight == 0


async def test_background_keeps_going_after_cut(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.latency = 0.05
    fake.add_fault(Fault(cut_after=2))
    stream = await client.responses.create(
        model=MODEL, input="a tree", tools=TOOLS, stream=True, background=True
    )
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    (response_id,) = fake.responses
    await fake.wait_until(lambda: fake.responses[response_id].status == "completed")
    assert (await client.responses.retrieve(response_id)).output_text == "Here is your image."


async def test_cancel_and_delete(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.latency = 5.0
    created = await client.responses.create(model=MODEL, input="slow", tools=TOOLS, background=True)
    await fake.wait_until(lambda: fake.in_flight == 1)
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert fake.in_flight == 0

    fake.latency = 0.0
    done = await client.responses.create(model=MODEL, input="quick", tools=TOOLS)
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(done.id)
    with pytest.raises(openai.BadRequestError):
        await client.responses.retrieve(done.id, stream=True)
    await client.responses.delete(done.id)
    assert done.id not in fake.responses
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(done.id)


async def test_wait_for_creates_sees_concurrent_request(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.latency = 0.2
    pending = asyncio.create_task(client.responses.create(model=MODEL, input="a", tools=TOOLS))
    await fake.wait_for_creates(1)
    await fake.wait_until(lambda: fake.in_flight == 1)
    response = await pending
    assert response.status == "completed"
    with pytest.raises(TimeoutError):
        await fake.wait_for_creates(2, timeout=0.05)


# --------------------------------------------------------------------------- faults and retries


async def test_429_is_retried_with_retry_count(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.add_fault(Fault(status=429, code="rate_limit_exceeded", retry_after=0.05))
    response = await make_client(max_retries=1).responses.create(model=MODEL, input="a", tools=TOOLS)

    assert response.status == "completed"
    creates = [r for r in fake.requests if r.path == "/v1/responses"]
    assert [r.headers["x-stainless-retry-count"] for r in creates] == ["0", "1"]
    assert creates[0].json == creates[1].json


async def test_429_without_retries_and_rate_limit_body(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(status=429, code="rate_limit_exceeded", retry_after=1))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model=MODEL, input="a", tools=TOOLS)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"


async def test_500_without_retries(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(status=500))
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model=MODEL, input="a", tools=TOOLS)
    assert (await client.responses.create(model=MODEL, input="a", tools=TOOLS)).status == "completed"


async def test_fault_match_times_and_route(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(status=503, match="boom", times=2, should_retry=False))
    fake.add_fault(Fault(status=500, route="retrieve"))
    ok = await client.responses.create(model=MODEL, input="fine", tools=TOOLS)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            await client.responses.create(model=MODEL, input="boom", tools=TOOLS)
        assert caught.value.status_code == 503
    assert (await client.responses.create(model=MODEL, input="boom", tools=TOOLS)).status == "completed"
    with pytest.raises(openai.InternalServerError):
        await client.responses.retrieve(ok.id)
    assert (await client.responses.retrieve(ok.id)).id == ok.id


async def test_drop_is_connection_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(drop=True))
    with pytest.raises(openai.APIConnectionError) as caught:
        await client.responses.create(model=MODEL, input="a", tools=TOOLS)
    assert not isinstance(caught.value, openai.APITimeoutError)


async def test_delay_triggers_client_timeout(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.add_fault(Fault(delay=3.0))
    with pytest.raises(openai.APITimeoutError):
        await make_client(timeout=0.3).responses.create(model=MODEL, input="a", tools=TOOLS)
    assert fake.responses == {}

    fake.add_fault(Fault(delay=0.05))
    response = await make_client(timeout=2).responses.create(model=MODEL, input="a", tools=TOOLS)
    assert response.status == "completed"


async def test_unknown_route_is_json_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.get("/nothing/here", cast_to=object)
    assert "Invalid URL" in str(caught.value)
