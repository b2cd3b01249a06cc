"""The fake OpenAI refuses what OpenAI's published spec refuses (with OpenAI's error shape), allows what the spec
lags behind on, and its own answers (responses, stream events) are what the spec describes."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from PIL import Image

from tests.fakes import openai_spec
from tests.fakes.openai_api import FakeOpenAI

MODEL = "gpt-5.5"
IMAGE = {"type": "image_generation", "model": "gpt-image-2", "size": "1024x1024"}
PIXEL = ("data:image/png;base64,"
         "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


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


@pytest.mark.parametrize(("change", "param", "code"), [
    ({"quality": "ultra"}, "tools[0].quality", "invalid_value"),
    ({"background": "sky"}, "tools[0].background", "invalid_value"),
    ({"action": "paint"}, "tools[0].action", "invalid_value"),
    ({"output_format": "bmp"}, "tools[0].output_format", "invalid_value"),
    ({"output_compression": 150}, "tools[0].output_compression", "integer_above_max_value"),
    ({"output_compression": -1}, "tools[0].output_compression", "integer_below_min_value"),
    ({"partial_images": 5}, "tools[0].partial_images", "integer_above_max_value"),
    ({"moderation": "none"}, "tools[0].moderation", "invalid_value"),
    ({"size": "1000x1000"}, "tools[0].size", "invalid_value"),  # not multiples of 16
    ({"size": "3840x1024"}, "tools[0].size", "invalid_value"),  # beyond 3:1
    ({"size": "4096x2304"}, "tools[0].size", "invalid_value"),  # beyond 3840x2160
    ({"size": "big"}, "tools[0].size", "invalid_value"),
    ({"colour": "red"}, "tools[0].colour", "unknown_parameter"),
    ({"input_image_mask": {"image_url": PIXEL, "x": 1}}, "tools[0].input_image_mask.x", "unknown_parameter"),
    ({"output_compression": "high"}, "tools[0].output_compression", "invalid_type"),
])
async def test_tool_values_the_spec_refuses_are_400(client: openai.AsyncOpenAI, change: dict[str, Any], param: str,
                                                    code: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=MODEL, input="a fox", tools=[{**IMAGE, **change}])
    error = caught.value
    assert (error.param, error.code, error.type) == (param, code, "invalid_request_error"), error.body
    assert isinstance(error.body, dict) and error.body["message"]
    assert openai_spec.validate("Error", error.body) == []


@pytest.mark.parametrize(("change", "param", "code"), [
    ({"extra_body": {"colour": "red"}}, "colour", "unknown_parameter"),
    ({"tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
    ({"metadata": {str(i): "x" for i in range(17)}}, "metadata", "object_above_max_properties"),
    ({"metadata": {"k": "x" * 513}}, "metadata.k", "string_above_max_length"),
    ({"safety_identifier": "u" * 65}, "safety_identifier", "string_above_max_length"),
    ({"store": "yes"}, "store", "invalid_type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x" * 20_971_521}]}]},
     "input[0].content[0].image_url", "string_above_max_length"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": PIXEL, "detail": "huge"}]}]},
     "input[0].content[0].detail", "invalid_value"),
])
async def test_request_fields_the_spec_refuses_are_400(client: openai.AsyncOpenAI, change: dict[str, Any], param: str,
                                                       code: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(**{"model": MODEL, "input": "a fox", "tools": [IMAGE], **change})
    assert (caught.value.param, caught.value.code) == (param, code), caught.value.body


@pytest.mark.parametrize("change", [
    {"quality": "xhigh"}, {"quality": "max"}, {"complexity": "high"}, {"output_format": "webp"},
    {"size": "1536x864"}, {"size": "3840x2160"}, {"size": "auto"}, {"partial_images": 3}, {"output_compression": 0},
    {"action": "edit"}, {"input_fidelity": None},
])
async def test_what_the_api_takes_beyond_the_spec_is_allowed(client: openai.AsyncOpenAI,
                                                              change: dict[str, Any]) -> None:
    # on a model that takes all of these (the per-model rules, which the spec knows nothing of, are elsewhere)
    tool = {**IMAGE, "model": "gpt-image-2.6-sunburst", **change}
    response = await client.responses.create(model=MODEL, input="a fox", tools=[tool],
                                             safety_identifier="user-1234")
    assert response.status == "completed"


def _data_url(width: int, height: int, mode: str, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, format=fmt)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(("image", "mask", "refusal"), [
    (_data_url(8, 8, "RGB"), _data_url(8, 8, "RGBA"), None),
    (None, _data_url(8, 8, "RGBA"), "requires an input image"),
    (_data_url(8, 8, "RGB"), _data_url(8, 8, "RGB"), "missing alpha channel"),
    (_data_url(8, 8, "RGB"), _data_url(8, 4, "RGBA"), "same dimensions"),
    (_data_url(8, 8, "RGB"), _data_url(8, 8, "RGB", "JPEG"), "must be a PNG"),
])
async def test_a_mask_is_a_png_with_alpha_the_size_of_the_input_image(
        client: openai.AsyncOpenAI, image: str | None, mask: str, refusal: str | None) -> None:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": "put a boat in the bay"}]
    if image is not None:
        content.append({"type": "input_image", "image_url": image, "detail": "auto"})
    tool = {**IMAGE, "model": "gpt-image-2.6-sunburst", "action": "edit", "input_image_mask": {"image_url": mask}}
    call = client.responses.create(model=MODEL, input=[{"role": "user", "content": content}], tools=[tool])
    if refusal is None:
        assert (await call).status == "completed"
        return
    with pytest.raises(openai.BadRequestError) as caught:
        await call
    assert refusal in caught.value.message
    assert caught.value.param == "tools[0].input_image_mask"


def test_the_newer_image_models_pass_the_spec() -> None:
    for model in ("gpt-image-2.5-flare", "gpt-image-2.6-sunburst", "gpt-image-2-2026-04-21"):
        assert openai_spec.check_create({"model": MODEL, "input": "x", "tools": [{**IMAGE, "model": model}]}) is None


def test_easels_own_request_passes_the_spec() -> None:
    body = {"model": "gpt-5.4", "instructions": "You are Easel.", "background": True, "store": True, "stream": True,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "a fox"},
                                                   {"type": "input_image", "image_url": PIXEL, "detail": "auto"}]}],
            "tools": [{**IMAGE, "quality": "high", "output_format": "jpeg", "output_compression": 80,
                       "background": "opaque"}],
            "tool_choice": {"type": "image_generation"}, "previous_response_id": "resp_1",
            "metadata": {"easel_job": "17"}}
    assert openai_spec.check_create(body) is None


# -- the fake's own answers, against the spec ------------------------------------------------------------


async def _post(fake: FakeOpenAI, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
        fake.base_url + "/responses", json=body, headers={"Authorization": "Bearer sk-test"}
    ) as r:
        if r.content_type == "text/event-stream":
            events = []
            async for line in r.content:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
            return r.status, events
        return r.status, await r.json()


async def _get(fake: FakeOpenAI, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(
        fake.base_url + path, headers={"Authorization": "Bearer sk-test"}
    ) as r:
        return await r.json()


@pytest.mark.parametrize("text", ["a fox", "a fox [[two]]", "a fox [[moderation]]", "[[text]] which style?",
                                  "a fox [[long]]"])
async def test_responses_and_stream_events_are_what_the_spec_describes(fake: FakeOpenAI, text: str) -> None:
    base = {"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
            "tools": [{**IMAGE, "output_format": "webp"}]}
    status, response = await _post(fake, base)
    assert status == 200
    assert openai_spec.validate("Response", response) == []
    status, events = await _post(fake, {**base, "stream": True})
    assert status == 200 and events
    for event in events:
        assert openai_spec.validate("ResponseStreamEvent", event) == [], event["type"]
    status, events = await _post(fake, {**base, "stream": True, "background": True})
    assert [e["type"] for e in events][:2] == ["response.created", "response.queued"]
    for event in events:
        assert openai_spec.validate("ResponseStreamEvent", event) == [], event["type"]
    retrieved = await _get(fake, "/responses/" + events[0]["response"]["id"])
    assert openai_spec.validate("Response", retrieved) == []


async def test_error_answers_are_what_the_spec_describes(fake: FakeOpenAI) -> None:
    status, body = await _post(fake, {"model": MODEL, "input": "x", "tools": [{**IMAGE, "quality": "ultra"}]})
    assert status == 400 and openai_spec.validate("ErrorResponse", body) == []
    assert openai_spec.validate("ErrorResponse", await _get(fake, "/responses/resp_missing")) == []
