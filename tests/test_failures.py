"""Failures are told in the thread in plain words; the chain stays at its last good response."""

from __future__ import annotations

import logging
import random

import pytest

from tests.conftest import Running
from tests.fakes.openai_api import Fault, default_image_factory


async def _thread_texts(easel: Running, ts: str) -> list[str]:
    return [m["text"] for m in easel.slack.thread("C0001", ts) if m.get("text")]


async def _good_start(easel: Running) -> tuple[str, str]:
    """A thread with one good image; returns (thread ts, its response id)."""
    ts, _ = await easel.sender.mention("a castle")
    await easel.slack.wait_for("files.completeUploadExternal")
    await easel.jobs_settled(1)
    return ts, list(easel.openai.responses)[0]


async def _next_reply_still_chains_on(easel: Running, ts: str, good_id: str, jobs_before: int) -> None:
    uploads = len(easel.slack.shared_files)
    await easel.sender.message("try a sunny day instead", thread_ts=ts)
    await easel.slack.wait_for("files.completeUploadExternal", count=uploads + 1)
    await easel.jobs_settled(jobs_before + 1)
    assert easel.openai.create_requests()[-1]["previous_response_id"] == good_id


async def test_moderation_block_as_http_400(easel: Running) -> None:
    ts, good = await _good_start(easel)
    await easel.sender.message("something awful [[moderation400]]", thread_ts=ts)
    jobs = await easel.jobs_settled(2)
    assert jobs[1].status == "failed" and jobs[1].error.startswith("moderation")
    assert any("safety system" in t and "Rephrasing" in t for t in await _thread_texts(easel, ts))
    thread = await easel.store.threads.get(team_id="T0001", channel_id="C0001", thread_ts=ts)
    assert thread.last_response_id == good
    await _next_reply_still_chains_on(easel, ts, good, 2)


async def test_moderation_block_as_failed_image_call(easel: Running) -> None:
    ts, good = await _good_start(easel)
    await easel.sender.message("something awful [[moderation]]", thread_ts=ts)
    await easel.jobs_settled(2)
    assert any("safety system" in t for t in await _thread_texts(easel, ts))
    assert len(easel.slack.shared_files) == 1
    gens = await easel.store.generations.all()
    assert gens[-1]["status"] == "failed" and "moderation" in gens[-1]["error"]
    await _next_reply_still_chains_on(easel, ts, good, 2)


async def test_a_rate_limit_is_waited_out_not_failed(easel_factory) -> None:
    easel = await easel_factory(OPENAI_MAX_RETRIES="1")
    ts, good = await _good_start(easel)
    easel.openai.add_fault(Fault(status=429, code="rate_limit_exceeded", retry_after=0.01, times=2))
    await easel.sender.message("again", thread_ts=ts)
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    jobs = await easel.jobs_settled(2)
    assert jobs[1].status == "done" and jobs[1].progress.paced == 2
    assert not any("rate-limiting" in t or ":warning:" in t for t in await _thread_texts(easel, ts))
    said = [c.args.get("text", "") for c in easel.slack.calls if c.method in ("chat.postMessage", "chat.update")]
    assert any("rate limit; you're next" in t for t in said)  # it was told its place while it waited
    # each 429 was answered once: the SDK did not retry it, the job asked again in its turn
    posts = [r for r in easel.openai.requests if r.method == "POST" and r.path == "/v1/responses"]
    assert [r.headers["x-stainless-retry-count"] for r in posts] == ["0", "0", "0", "0"]
    assert posts[-1].json["previous_response_id"] == good  # the turn that finally went chains as the first did
    thread = await easel.store.threads.get(team_id="T0001", channel_id="C0001", thread_ts=ts)
    assert thread.last_response_id == jobs[1].response_id != good


async def test_an_exhausted_quota_is_explained_at_once(easel: Running) -> None:
    ts, good = await _good_start(easel)
    easel.openai.add_fault(Fault(status=429, code="insufficient_quota", type="insufficient_quota",
                                 message="You exceeded your current quota, please check your plan and billing."))
    await easel.sender.message("again", thread_ts=ts)
    jobs = await easel.jobs_settled(2)
    assert jobs[1].status == "failed" and jobs[1].error.startswith("quota")
    assert any("used up its quota" in t for t in await _thread_texts(easel, ts))
    assert len(easel.openai.create_requests()) == 2  # not retried: waiting would not help
    await _next_reply_still_chains_on(easel, ts, good, 2)


async def test_rate_limit_and_server_errors_are_retried_transparently(easel: Running) -> None:
    easel.openai.add_fault(Fault(status=429, code="rate_limit_exceeded", retry_after=0.01))
    easel.openai.add_fault(Fault(status=503, retry_after_ms=10))
    await easel.sender.mention("a patient painting")
    await easel.slack.wait_for("files.completeUploadExternal")
    [job] = await easel.jobs_settled(1)
    assert job.status == "done"
    posts = [r for r in easel.openai.requests if r.method == "POST" and r.path == "/v1/responses"]
    # the 429 sent the job back to wait for its turn (a new request), the 503 was retried by the SDK
    assert [r.headers["x-stainless-retry-count"] for r in posts] == ["0", "0", "1"]


async def test_time_out_is_explained(easel_factory) -> None:
    easel = await easel_factory(OPENAI_TIMEOUT="0.3", OPENAI_MAX_RETRIES="0")
    easel.openai.add_fault(Fault(delay=3))
    ts, _ = await easel.sender.mention("a very slow painting")
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed" and job.error.startswith("timeout")
    assert any("took too long" in t for t in await _thread_texts(easel, ts))


async def test_unknown_model_is_explained(easel_factory) -> None:
    easel = await easel_factory(EXTRA_IMAGE_MODELS='{"gpt-image-9": {"transparent": true}}')
    ts, _ = await easel.sender.mention("a boat --model gpt-image-9")
    [job] = await easel.jobs_settled(1)
    assert job.error.startswith("unknown_model")
    assert easel.openai.create_requests()[0]["tools"][0]["model"] == "gpt-image-9"
    assert any("gpt-image-9" in t and "model" in t for t in await _thread_texts(easel, ts))


async def test_response_failed_is_explained(easel: Running) -> None:
    ts, good = await _good_start(easel)
    easel.openai.add_fault(Fault(fail_response=True, code="server_error", message="The server had an error"))
    await easel.sender.message("again", thread_ts=ts)
    jobs = await easel.jobs_settled(2)
    assert jobs[1].status == "failed"
    assert any("could not be reached or had an error" in t for t in await _thread_texts(easel, ts))
    await _next_reply_still_chains_on(easel, ts, good, 2)


async def test_cut_off_stream_is_resumed_without_paying_twice(easel: Running) -> None:
    easel.openai.latency = 0.2
    easel.openai.add_fault(Fault(cut_after=4))
    ts, _ = await easel.sender.mention("a bridge")
    await easel.slack.wait_for("files.completeUploadExternal")
    [job] = await easel.jobs_settled(1)
    assert job.status == "done"
    assert len(easel.openai.create_requests()) == 1  # one generation paid for
    resumed = [r for r in easel.openai.requests if r.method == "GET" and r.query.get("stream") == "true"]
    assert resumed, "the stream was picked up again"
    assert easel.slack.shared_files[0]["bytes"] == default_image_factory(1024, 1024, "png", "a bridge")


async def test_expired_chain_continues_on_a_new_chain_with_the_last_image(easel: Running) -> None:
    ts, good = await _good_start(easel)
    first_image = easel.slack.shared_files[0]["bytes"]
    easel.openai.forget(good)
    await easel.sender.message("now make it night", thread_ts=ts)
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    jobs = await easel.jobs_settled(2)
    assert jobs[1].status == "done"
    creates = easel.openai.create_requests()
    assert creates[1]["previous_response_id"] == good  # tried the chain
    assert "previous_response_id" not in creates[2]  # then a new one...
    images = [p for p in creates[2]["input"][0]["content"] if p["type"] == "input_image"]
    assert len(images) == 1  # ...carrying the thread's last image
    import base64
    assert base64.b64decode(images[0]["image_url"].split(",", 1)[1]) == first_image
    assert "started over" in easel.slack.shared_files[1]["initial_comment"]
    thread = await easel.store.threads.get(team_id="T0001", channel_id="C0001", thread_ts=ts)
    assert thread.last_response_id == list(easel.openai.responses)[-1]


async def test_slack_upload_failure_after_retries_is_explained(easel_factory) -> None:
    easel = await easel_factory(PUBLISH_RETRY_SECONDS="1")
    easel.slack.add_outage("upload", seconds=600, status=500)  # longer than Easel keeps trying
    ts, _ = await easel.sender.mention("a vase")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "failed" and job.error.startswith("slack")
    assert any("Slack would not take it" in t for t in await _thread_texts(easel, ts))
    assert easel.slack.shared_files == []


async def test_slack_rate_limit_is_retried(easel: Running) -> None:
    easel.slack.add_fault("files.completeUploadExternal", status=429, retry_after=0)
    easel.slack.add_fault("chat.postMessage", status=429, retry_after=0)
    await easel.sender.mention("a lamp")
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    [job] = await easel.jobs_settled(1)
    assert job.status == "done"
    assert len(easel.slack.shared_files) == 1


async def test_failed_upload_completion_is_retried(easel: Running) -> None:
    easel.slack.add_fault("files.completeUploadExternal", status=200, error="internal_error")
    await easel.sender.mention("a harbour")
    [job] = await easel.jobs_settled(1)
    assert job.status == "done"
    assert len(easel.slack.shared_files) == 1
    assert len(easel.slack.calls_to("files.getUploadURLExternal")) == 2  # the whole upload was done again


async def test_attachment_download_failures_are_retried_then_explained(easel: Running) -> None:
    f = easel.slack.add_file(default_image_factory(8, 8, "png", "in"), name="in.png")
    easel.slack.add_fault("download", status=503, retry_after=0)
    await easel.sender.mention("edit this", files=[f])
    await easel.slack.wait_for("files.completeUploadExternal")
    assert len(easel.slack.calls_to("download")) == 2
    easel.slack.add_fault("download", status=500, retry_after=0, times=10)
    ts, _ = await easel.sender.mention("edit this too", files=[f], channel="C0002")
    jobs = await easel.jobs_settled(2, timeout=30)
    assert jobs[1].status == "failed" and jobs[1].error.startswith("download")
    texts = [m["text"] for m in easel.slack.thread("C0002", ts) if m.get("text")]
    assert any("did not deliver the file" in t for t in texts), texts
    assert len(easel.openai.create_requests()) == 1


async def test_silent_stream_times_out_and_is_resumed(easel_factory) -> None:
    easel = await easel_factory(OPENAI_TIMEOUT="0.5")
    easel.openai.latency = 1.5  # the stream goes quiet for longer than the read time-out
    await easel.sender.mention("a quiet lake")
    await easel.slack.wait_for("files.completeUploadExternal", timeout=30)
    [job] = await easel.jobs_settled(1)
    assert job.status == "done"
    assert len(easel.openai.create_requests()) == 1
    assert [r for r in easel.openai.requests if r.method == "GET"], "picked up with retrieve"


async def test_dropped_connection_is_retried(easel: Running) -> None:
    easel.openai.add_fault(Fault(drop=True))
    await easel.sender.mention("a windmill")
    await easel.slack.wait_for("files.completeUploadExternal")
    [job] = await easel.jobs_settled(1)
    assert job.status == "done"


async def test_dropped_connections_after_retries_are_explained(easel_factory) -> None:
    easel = await easel_factory(OPENAI_MAX_RETRIES="1")
    easel.openai.add_fault(Fault(drop=True, times=2))
    ts, _ = await easel.sender.mention("a windmill")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "failed" and job.error.startswith("unavailable")
    assert any("could not be reached" in t for t in await _thread_texts(easel, ts))


async def test_a_notice_slack_will_not_take_ends_instead_of_hanging(easel: Running) -> None:
    easel.slack.add_fault("chat.postMessage", status=500, retry_after=None, times=50)
    await easel.sender.mention("a cat --quality ultra")  # a notice job: one message, no OpenAI
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "failed"


async def test_imagine_whose_root_message_fails_is_told_privately(easel: Running) -> None:
    easel.slack.add_fault("chat.postMessage", status=500, retry_after=None, times=50)
    result = await easel.sender.command("a lighthouse", response_url=easel.slack.response_url("r9"))
    assert "On it" in result.body_text
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "failed"
    [call] = await easel.slack.wait_for("response_url")
    assert "Slack would not let Easel start" in call.args["text"]
    assert easel.openai.requests == []


async def test_imagine_in_a_channel_easel_cannot_post_in_is_told_privately(easel: Running) -> None:
    easel.slack.add_fault("chat.postMessage", status=200, error="channel_not_found")
    await easel.sender.command("a lighthouse", response_url=easel.slack.response_url("r8"))
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed"
    [call] = await easel.slack.wait_for("response_url")
    assert "/invite @Easel" in call.args["text"]


async def test_answers_without_room_wait_in_their_streams_and_all_arrive(easel_factory) -> None:
    """More generations finish at once than MAX_IMAGES_IN_MEMORY: the rest wait, unread, in their own streams
    until room frees; nothing is fetched a second time."""
    easel = await easel_factory(MAX_IMAGES_IN_MEMORY="1")

    def large(w: int, h: int, fmt: str, prompt: str) -> bytes:  # ~270 KB of base64: a "large" event
        return b"\x89PNG\r\n\x1a\n" + random.Random(prompt).randbytes(200_000)

    easel.openai.image_factory = large
    easel.openai.latency = 0.3
    for i in range(6):
        await easel.sender.mention(f"image {i}", channel=f"C{i}", user=f"U{i}")
    await easel.slack.wait_for("files.completeUploadExternal", count=6, timeout=30)
    jobs = await easel.jobs_settled(6)
    assert all(j.status == "done" for j in jobs)
    assert len(easel.openai.create_requests()) == 6  # no generation paid twice
    assert sorted(f["bytes"] for f in easel.slack.shared_files) == sorted(large(0, 0, "", f"image {i}")
                                                                          for i in range(6))
    assert [r.path for r in easel.openai.requests if r.method == "GET"] == []


async def test_a_key_openai_rejects_is_logged_as_an_error(easel: Running, caplog: pytest.LogCaptureFixture) -> None:
    easel.openai.add_fault(Fault(status=401, code="invalid_api_key", message="Incorrect API key provided: sk-…"))
    await easel.sender.mention("a lantern")
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed" and (job.error or "").startswith("auth:")
    [record] = [r for r in caplog.records if r.name == "bot.jobs" and f"job {job.id} failed" in r.getMessage()]
    assert record.levelno == logging.ERROR
