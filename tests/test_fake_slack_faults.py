"""The fake Slack's faults for exactly-once tests: an answer lost after Slack committed the call, a stretch of
errors, a call held until the test lets it go; and files.info showing where a file is shared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlack

TOKEN = "xoxb-test-token"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as f:
        yield f


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=fake.api_url, retry_handlers=[])  # each call is one request


async def _uploaded(fake: FakeSlack, client: AsyncWebClient, data: bytes = b"\x89PNG\r\n\x1a\nxyz") -> str:
    ticket = await client.files_getUploadURLExternal(filename="a.png", length=len(data))
    async with aiohttp.ClientSession() as session, session.post(ticket["upload_url"], data=data) as r:
        assert r.status == 200
    return str(ticket["file_id"])


async def test_files_info_knows_a_file_only_once_completed_and_shows_its_shares(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    file_id = await _uploaded(fake, client)
    with pytest.raises(SlackApiError) as err:
        await client.files_info(file=file_id)
    assert err.value.response["error"] == "file_not_found"
    await client.files_completeUploadExternal(files=[{"id": file_id, "title": "a"}], channel_id="C1",
                                              thread_ts="1.0")
    info = (await client.files_info(file=file_id))["file"]
    assert info["channels"] == ["C1"]
    [share] = info["shares"]["public"]["C1"]
    assert share["thread_ts"] == "1.0" and share["ts"]


async def test_a_completion_that_commits_and_then_answers_500(fake: FakeSlack, client: AsyncWebClient) -> None:
    file_id = await _uploaded(fake, client)
    fake.add_fault("files.completeUploadExternal", status=500, error="internal_error", after_commit=True)
    with pytest.raises(SlackApiError) as err:
        await client.files_completeUploadExternal(files=[{"id": file_id, "title": "a"}], channel_id="C1")
    assert err.value.response.status_code == 500
    assert [f["file_id"] for f in fake.shared_files] == [file_id]  # shared all the same
    assert (await client.files_info(file=file_id))["file"]["channels"] == ["C1"]


async def test_a_completion_that_commits_and_then_drops_the_connection(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    file_id = await _uploaded(fake, client)
    fake.add_fault("files.completeUploadExternal", drop=True, after_commit=True)
    with pytest.raises(aiohttp.ClientError):
        await client.files_completeUploadExternal(files=[{"id": file_id, "title": "a"}], channel_id="C1")
    assert [f["file_id"] for f in fake.shared_files] == [file_id]


async def test_a_dropped_call_without_commit_does_nothing(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_fault("chat.postMessage", drop=True)
    with pytest.raises(aiohttp.ClientError):
        await client.chat_postMessage(channel="C1", text="hi")
    assert fake.messages == []
    await client.chat_postMessage(channel="C1", text="hi")
    assert len(fake.messages) == 1


async def test_an_outage_by_calls_fails_every_call_of_the_window(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_outage("files.getUploadURLExternal", calls=3, status=503)
    for _ in range(3):
        with pytest.raises(SlackApiError) as err:
            await client.files_getUploadURLExternal(filename="a.png", length=3)
        assert err.value.response.status_code == 503
    assert (await client.files_getUploadURLExternal(filename="a.png", length=3))["ok"]


async def test_an_outage_by_time_ends_on_its_own(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_outage("chat.postMessage", seconds=0.3, status=500)
    failed = 0
    while True:
        try:
            await client.chat_postMessage(channel="C1", text="hi")
            break
        except SlackApiError as e:
            assert e.response.status_code == 500
            failed += 1
    assert failed >= 1 and len(fake.messages) == 1
    fake.add_outage("chat.postMessage", seconds=60)
    fake.end_outage("chat.postMessage")
    await client.chat_postMessage(channel="C1", text="again")


async def test_a_gate_holds_calls_until_set(fake: FakeSlack, client: AsyncWebClient) -> None:
    gate = fake.gate("chat.postMessage")
    posting = asyncio.create_task(client.chat_postMessage(channel="C1", text="held"))
    await fake.wait_for("chat.postMessage")
    assert fake.messages == [] and not posting.done()
    gate.set()
    assert (await posting)["ok"] and len(fake.messages) == 1
