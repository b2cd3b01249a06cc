"""The fakes' observers (what the load benchmark stamps its times from), driven by the real SDKs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.openai_api import FakeOpenAI, FakeResponse, OpenAIObserver, Recorded
from tests.fakes.slack_api import FakeSlack, SlackObserver

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


class SlackLog(SlackObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def handled(self, method: str, args: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        self.events.append(("handled", method, dict(args), dict(answer)))

    def upload_arrived(self, file_id: str) -> None:
        self.events.append(("arrived", file_id))

    def upload_handled(self, file_id: str) -> None:
        self.events.append(("uploaded", file_id))


class OpenAILog(OpenAIObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def received(self, request: Recorded) -> None:
        self.events.append(("received", request.method, request.path))

    def generation_started(self, response: FakeResponse) -> None:
        self.events.append(("started", response.id, response.status))

    def generation_ended(self, response: FakeResponse) -> None:
        self.events.append(("ended", response.id, response.status))


async def test_slack_observer_sees_each_call_with_its_answer_and_each_upload() -> None:
    log = SlackLog()
    async with FakeSlack(observer=log) as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        await client.reactions_add(channel="C1", timestamp="1.000001", name="eyes")
        resp = await client.files_upload_v2(content=PNG, filename="a.png", channel="C1", thread_ts="1.000001")
    file_id = resp["file"]["id"]
    kinds = [e[0] if e[0] != "handled" else e[1] for e in log.events]
    assert kinds == ["reactions.add", "files.getUploadURLExternal", "arrived", "uploaded",
                     "files.completeUploadExternal"]
    _, _, args, answer = log.events[0]
    assert args["name"] == "eyes" and answer == {"ok": True}
    assert log.events[1][3]["file_id"] == file_id and log.events[2:4] == [("arrived", file_id), ("uploaded", file_id)]
    _, _, args, answer = log.events[4]
    assert args["channel_id"] == "C1" and [f["id"] for f in answer["files"]] == [file_id]


async def test_openai_observer_sees_requests_and_each_generation_start_and_end() -> None:
    log = OpenAILog()
    async with FakeOpenAI(observer=log) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)
        tools: Any = [{"type": "image_generation", "model": "gpt-image-2", "quality": "low"}]
        response = await client.responses.create(model="gpt-5.5", input="a red fox", tools=tools)
        await client.close()
    assert log.events == [
        ("received", "POST", "/v1/responses"),
        ("started", response.id, "in_progress"),
        ("ended", response.id, "completed"),
    ]
