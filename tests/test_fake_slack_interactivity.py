"""The fake Slack's interactive side, against the real slack_sdk client: views.open and its triggers, Block
Kit checks (slack_file image blocks only for PNG, JPEG and GIF), files.delete."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlack


def _image(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def client(fake: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    c = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    yield c


def _trigger(age: float = 0.0) -> str:
    return f"{int(time.time() - age)}.1.{uuid.uuid4().hex}"


def _modal(**changes: Any) -> dict[str, Any]:
    view = {"type": "modal", "callback_id": "easel.edit_view", "title": {"type": "plain_text", "text": "Edit"},
            "submit": {"type": "plain_text", "text": "Edit"},
            "blocks": [{"type": "input", "block_id": "what", "label": {"type": "plain_text", "text": "What"},
                        "element": {"type": "plain_text_input", "action_id": "value"}}]}
    return {**view, **changes}


async def _error(call: Any) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as caught:
        await call
    return dict(caught.value.response.data)


@pytest.mark.parametrize(("mimetype", "fmt", "shown"), [
    ("image/png", "PNG", True), ("image/jpeg", "JPEG", True), ("image/gif", "GIF", True),
    ("image/webp", "WEBP", False),
])
async def test_slack_file_image_blocks_only_for_png_jpeg_and_gif(fake: FakeSlack, client: AsyncWebClient,
                                                                 mimetype: str, fmt: str, shown: bool) -> None:
    f = fake.add_file(_image(fmt), name=f"a.{fmt.lower()}", mimetype=mimetype)
    blocks = [{"type": "image", "slack_file": {"id": f["id"]}, "alt_text": "an image"}]
    call = client.chat_postMessage(channel="C0001", text="an image", blocks=blocks)
    if shown:
        assert (await call)["ok"]
        return
    error = await _error(call)
    assert error["error"] == "invalid_blocks"
    assert "unsupported image type image/webp" in error["response_metadata"]["messages"][0]
    assert fake.messages == []


async def test_buttons_are_checked(fake: FakeSlack, client: AsyncWebClient) -> None:
    button = {"type": "button", "action_id": "easel.reroll", "value": "F1",
              "text": {"type": "plain_text", "text": "Reroll"}}
    twice = [{"type": "actions", "elements": [button, button]}]
    assert (await _error(client.chat_postMessage(channel="C0001", text="x", blocks=twice)))["error"] == \
        "invalid_blocks"
    long_label = [{"type": "actions", "elements": [{**button, "text": {"type": "plain_text", "text": "x" * 76}}]}]
    assert (await _error(client.chat_postMessage(channel="C0001", text="x", blocks=long_label)))["error"] == \
        "invalid_blocks"
    rows = [{"type": "actions", "block_id": f"b{i}", "elements": [button]} for i in range(2)]
    assert (await client.chat_postMessage(channel="C0001", text="x", blocks=rows))["ok"]  # unique per block


async def test_views_open_takes_a_fresh_trigger_once(fake: FakeSlack, client: AsyncWebClient) -> None:
    trigger = _trigger()
    opened = await client.views_open(trigger_id=trigger, view=_modal(private_metadata="{}"))
    assert opened["view"]["id"] in fake.views and opened["view"]["private_metadata"] == "{}"
    assert (await _error(client.views_open(trigger_id=trigger, view=_modal())))["error"] == "exchanged_trigger_id"
    assert (await _error(client.views_open(trigger_id=_trigger(age=4), view=_modal())))["error"] == \
        "expired_trigger_id"
    assert (await _error(client.views_open(trigger_id="made-up", view=_modal())))["error"] == "invalid_trigger_id"
    assert len(fake.views) == 1


@pytest.mark.parametrize("change", [
    {"type": "page"},
    {"title": {"type": "plain_text", "text": "A title much longer than Slack allows"}},
    {"submit": None},  # input blocks need a submit button
    {"private_metadata": "x" * 3001},
    {"blocks": [{"type": "input", "label": {"type": "plain_text", "text": "Mask"},
                 "element": {"type": "file_input", "action_id": "value", "filetypes": ["exe"]}}]},
    {"blocks": [{"type": "input", "label": {"type": "plain_text", "text": "Q"},
                 "element": {"type": "static_select", "action_id": "value",
                             "options": [{"text": {"type": "plain_text", "text": "low"}, "value": "low"}],
                             "initial_option": {"text": {"type": "plain_text", "text": "high"}, "value": "high"}}}]},
])
async def test_views_open_refuses_a_view_slack_would(fake: FakeSlack, client: AsyncWebClient,
                                                     change: dict[str, Any]) -> None:
    view = {k: v for k, v in _modal(**change).items() if v is not None}
    error = await _error(client.views_open(trigger_id=_trigger(), view=view))
    assert error["error"] == "invalid_arguments" and error["response_metadata"]["messages"]
    assert fake.views == {}


async def test_files_delete_removes_the_bots_own_files_only(fake: FakeSlack, client: AsyncWebClient) -> None:
    data = _image("PNG")
    ticket = await client.files_getUploadURLExternal(filename="a.png", length=len(data))
    async with aiohttp.ClientSession() as http, http.post(ticket["upload_url"], data=data) as r:
        assert r.status == 200
    await client.files_completeUploadExternal(files=[{"id": ticket["file_id"]}], channel_id="C0001")
    assert (await client.files_delete(file=ticket["file_id"]))["ok"]
    assert fake.deleted_files == [ticket["file_id"]]
    assert (await _error(client.files_info(file=ticket["file_id"])))["error"] == "file_not_found"
    theirs = fake.add_file(data, name="theirs.png")
    assert (await _error(client.files_delete(file=theirs["id"])))["error"] == "cant_delete_file"
    assert (await _error(client.files_delete(file="F404")))["error"] == "file_not_found"
