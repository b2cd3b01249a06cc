"""bot.imaging against the fake Responses API, through the real SDK client Easel builds: how an answer's images
are read from its stream."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.answers import Image
from bot.config import Settings
from bot.imaging import OpenAIImages, PayloadSlots, Turn
from bot.openai_client import openai_client
from tests.fakes.openai_api import FakeOpenAI, Fault


def _large(w: int, h: int, fmt: str, prompt: str) -> bytes:  # ~270 KB of base64: a "large" event
    return b"\x89PNG\r\n\x1a\n" + random.Random(prompt).randbytes(200_000)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(image_factory=_large) as server:
        yield server


@pytest.fixture
async def images(fake: FakeOpenAI) -> AsyncIterator[OpenAIImages]:
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s",
                                  "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url,
                                  "OPENAI_MAX_RETRIES": "0"})
    client = openai_client(settings)
    yield OpenAIImages(client, model="gpt-5.4", slots=PayloadSlots(2))
    await client.close()


async def _run(images: OpenAIImages, prompt: str) -> tuple[Any, list[Image]]:
    arrived: list[Image] = []

    async def started(_: str) -> None:
        return None

    outcome = await images.run(Turn(prompt=prompt, tool={"type": "image_generation"}), on_started=started,
                               on_image=arrived.append)
    outcome.release()
    return outcome, arrived


async def test_each_image_is_read_once_the_final_event_repeats_none_of_it(images, fake) -> None:
    outcome, arrived = await _run(images, "two foxes [[two]]")
    assert len(outcome.images) == 2 and len(arrived) == 2
    assert all(i.data.startswith(b"\x89PNG") and len(i.data) == 200_008 for i in outcome.images)
    # the answer's images are the very bytes their own events brought: the final event's copies were not kept
    assert all(o.data is a.data for o, a in zip(outcome.images, arrived, strict=True))
    assert [o.call_id for o in outcome.images] == [a.call_id for a in arrived]
    assert outcome.text == "Here is your image."
    assert [r.method for r in fake.requests] == ["POST"]  # nothing looked up afterwards


async def test_an_image_whose_own_event_never_came_is_looked_up_whole(images, fake) -> None:
    fake.add_fault(Fault(omit_events=("response.output_item.done",)))
    outcome, arrived = await _run(images, "a lighthouse")
    assert arrived == []
    [image] = outcome.images
    assert image.data == _large(0, 0, "", "a lighthouse")
    assert image.revised_prompt
    assert [r.method for r in fake.requests] == ["POST", "GET"]  # the answer, looked up once
