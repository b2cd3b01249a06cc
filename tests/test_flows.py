"""End-to-end flows through real Bolt, slack_sdk and openai code, against the fakes, on both databases."""

from __future__ import annotations

import base64

from tests.conftest import Running, wait_until
from tests.fakes.openai_api import default_image_factory, long_text


def _png(prompt: str) -> bytes:
    return default_image_factory(1024, 1024, "png", prompt)


async def _first_image(easel: Running) -> dict:
    await easel.slack.wait_for("files.completeUploadExternal")
    await easel.jobs_settled()
    return easel.slack.shared_files[0]


async def test_mention_answers_in_thread_with_image_and_revised_prompt(easel: Running) -> None:
    ts, result = await easel.sender.mention("a fox in a bowler hat")
    assert result.status == 200
    shared = await _first_image(easel)
    assert len(easel.slack.shared_files) == 1
    assert shared["thread_ts"] == ts
    assert shared["channel_id"] == "C0001"
    assert shared["filename"].endswith(".png")
    assert shared["bytes"] == _png("a fox in a bowler hat")
    assert "A detailed rendering of: a fox in a bowler hat" in shared["initial_comment"]
    [create] = easel.openai.create_requests()
    assert create["tools"][0]["type"] == "image_generation"
    assert create["tools"][0]["model"] == "gpt-image-2"
    assert create["model"] == "gpt-5.4"
    assert create["tool_choice"] == "auto"  # a mention lets the model decide
    assert create["instructions"]
    assert create["input"][0]["content"][0] == {"type": "input_text", "text": "a fox in a bowler hat"}
    assert "previous_response_id" not in create
    # the model's own words come in the image's message, not in a second one
    assert "Here is your image." in shared["initial_comment"]
    assert shared["initial_comment"].index("Here is your image.") < shared["initial_comment"].index("Prompt used")
    assert not any("Here is your image." in m["text"] for m in easel.slack.messages)


async def test_long_model_text_with_an_image_gets_messages_of_its_own(easel: Running) -> None:
    ts, _ = await easel.sender.mention("draw a map of the office [[long]]")
    shared = await _first_image(easel)
    assert "Style option" not in shared["initial_comment"]
    posted = [m["text"] for m in easel.slack.messages
              if m.get("thread_ts") == ts and m["user"] == "UBOT" and not m.get("blocks")  # (not the buttons)
              and ((m.get("metadata") or {}).get("event_payload") or {}).get("post") != "queue"]  # (nor the status)
    assert len(posted) >= 3  # split where Slack needs it
    assert "".join("".join(posted).split()) == "".join(long_text().split())  # all of it, nothing else


async def test_reply_in_thread_continues_the_chain(easel: Running) -> None:
    ts, _ = await easel.sender.mention("a poster for the Friday quiz, retro style")
    await _first_image(easel)
    first_id = easel.openai.create_requests()[0]
    [first_response] = [r.id for r in easel.openai.responses.values()]
    assert first_id  # the request was recorded
    await easel.sender.message("make the background blue", thread_ts=ts)
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    await easel.jobs_settled(2)
    second = easel.openai.create_requests()[1]
    assert second["previous_response_id"] == first_response
    assert second["instructions"]  # a chained call does not inherit them
    assert easel.slack.shared_files[1]["thread_ts"] == ts
    thread = await easel.store.threads.get(team_id="T0001", channel_id="C0001", thread_ts=ts)
    assert thread is not None
    assert thread.last_response_id == list(easel.openai.responses)[1]
    assert thread.last_image_file_id == easel.slack.shared_files[1]["file_id"]


async def test_reply_in_a_thread_easel_does_not_own_is_ignored(easel: Running) -> None:
    root = easel.slack.add_message("C0001", "lunch?")
    _, result = await easel.sender.message("make it blue", thread_ts=root["ts"])
    assert result.status == 200
    assert await easel.store.jobs.all() == []
    assert easel.openai.create_requests() == []


async def test_mention_in_someone_elses_thread_starts_a_chain_there(easel: Running) -> None:
    root = easel.slack.add_message("C0001", "we need a logo")
    await easel.sender.mention("draw a logo for this", thread_ts=root["ts"])
    shared = await _first_image(easel)
    assert shared["thread_ts"] == root["ts"]
    assert "previous_response_id" not in easel.openai.create_requests()[0]
    # and now the thread is Easel's: a plain reply continues it
    await easel.sender.message("more green", thread_ts=root["ts"])
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    assert easel.openai.create_requests()[1]["previous_response_id"] == list(easel.openai.responses)[0]


async def test_imagine_posts_root_message_and_image_in_its_thread(easel: Running) -> None:
    result = await easel.sender.command("a red fox --quality high", user="U0042")
    assert result.status == 200
    assert "On it" in result.body_text
    await easel.slack.wait_for("files.completeUploadExternal")
    await easel.jobs_settled(1)
    root = easel.slack.messages[0]  # Easel's first post: the root (Slack marks it thread_ts == ts once replied)
    assert root["thread_ts"] in (None, root["ts"])
    assert "<@U0042>" in root["text"] and "a red fox" in root["text"]
    shared = easel.slack.shared_files[0]
    assert shared["thread_ts"] == root["ts"]
    [create] = easel.openai.create_requests()
    assert create["tool_choice"] == {"type": "image_generation"}  # /imagine always draws
    assert create["tools"][0]["quality"] == "high"
    # a reply in the root's thread continues the chain
    await easel.sender.message("now in winter", thread_ts=root["ts"])
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    assert easel.openai.create_requests()[1]["previous_response_id"] == list(easel.openai.responses)[0]


async def test_imagine_help_and_bare_command_explain_usage(easel: Running) -> None:
    for text in ("help", ""):
        result = await easel.sender.command(text)
        assert result.status == 200
        assert "--size" in result.body_text and "/imagine" in result.body_text
    assert await easel.store.jobs.all() == []


async def test_imagine_bad_flag_is_refused_privately_and_nothing_is_sent(easel: Running) -> None:
    result = await easel.sender.command("a cat --size huge")
    assert result.status == 200
    assert "--size huge" in result.body_text and "WIDTHxHEIGHT" in result.body_text
    result = await easel.sender.command("a cat --background transparent --format jpeg")
    assert "transparent" in result.body_text and "jpeg" in result.body_text
    assert await easel.store.jobs.all() == []
    assert easel.openai.requests == []


async def test_bare_mention_explains_usage_in_thread(easel: Running) -> None:
    ts, _ = await easel.sender.mention("")
    msgs = await easel.slack.wait_for("chat.postMessage")
    assert msgs[0].args["thread_ts"] == ts
    assert "/imagine" in msgs[0].args["text"]
    await easel.jobs_settled(1)
    assert easel.openai.requests == []


async def test_direct_message_works_like_a_mention(easel: Running) -> None:
    ts, _ = await easel.sender.message("a lighthouse at dusk", channel="D0001", channel_type="im")
    shared = await _first_image(easel)
    assert shared["channel_id"] == "D0001" and shared["thread_ts"] == ts
    await easel.sender.message("add a moon", channel="D0001", channel_type="im", thread_ts=ts)
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    assert easel.openai.create_requests()[1]["previous_response_id"] == list(easel.openai.responses)[0]


async def test_flags_in_a_mention_shape_the_tool_and_the_file(easel: Running) -> None:
    await easel.sender.mention("a teapot --format webp --compression 80 --quality low --size 1536x1024")
    shared = await _first_image(easel)
    tool = easel.openai.create_requests()[0]["tools"][0]
    assert tool["output_format"] == "webp" and tool["output_compression"] == 80
    assert tool["quality"] == "low" and tool["size"] == "1536x1024"
    assert easel.openai.create_requests()[0]["input"][0]["content"][0]["text"] == "a teapot"
    assert shared["filename"].endswith(".webp")
    assert shared["bytes"][:4] == b"RIFF" and shared["bytes"][8:12] == b"WEBP"


async def test_flags_stick_to_the_thread(easel: Running) -> None:
    ts, _ = await easel.sender.mention("a kite --model gpt-image-2.5-sunburst --quality max")
    await _first_image(easel)
    await easel.sender.message("make it red", thread_ts=ts)
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    tool = easel.openai.create_requests()[1]["tools"][0]
    assert tool["model"] == "gpt-image-2.5-sunburst" and tool["quality"] == "max"


async def test_bad_flag_in_a_mention_is_explained_in_thread_and_nothing_is_sent(easel: Running) -> None:
    ts, _ = await easel.sender.mention("a cat --quality ultra")
    [call] = await easel.slack.wait_for("chat.postMessage")
    assert call.args["thread_ts"] == ts
    assert "--quality ultra" in call.args["text"] and "low, medium, high, xhigh, max, auto" in call.args["text"]
    await easel.jobs_settled(1)
    assert easel.openai.requests == []


async def test_transparent_on_gpt_image_2_switches_model_and_says_so(easel: Running) -> None:
    await easel.sender.mention("a sticker of a cat --background transparent")
    shared = await _first_image(easel)
    [create] = easel.openai.create_requests()  # the one request, on a model that can: nothing refused
    tool = create["tools"][0]
    assert tool["model"] == "gpt-image-2.5-flare" and tool["background"] == "transparent"
    assert "gpt-image-2 cannot make a transparent background" in shared["initial_comment"]
    assert "gpt-image-2.5-flare" in shared["initial_comment"]


async def test_transparent_jpeg_is_refused_in_thread(easel: Running) -> None:
    await easel.sender.mention("a sticker --background transparent --format jpeg")
    [call] = await easel.slack.wait_for("chat.postMessage")
    assert "transparent" in call.args["text"] and "jpeg" in call.args["text"]
    await easel.jobs_settled(1)
    assert easel.openai.requests == []


async def test_attached_image_is_downloaded_with_the_token_and_sent_as_input(easel: Running) -> None:
    logo = _png("logo")
    f = easel.slack.add_file(logo, name="logo.png", mimetype="image/png")
    await easel.sender.mention("put this logo on a mug", files=[f])
    await _first_image(easel)
    [download] = easel.slack.calls_to("download")
    assert download.headers["Authorization"] == f"Bearer {easel.slack.bot_token}"
    content = easel.openai.create_requests()[0]["input"][0]["content"]
    images = [p for p in content if p["type"] == "input_image"]
    assert len(images) == 1
    assert images[0]["image_url"] == "data:image/png;base64," + base64.b64encode(logo).decode()


async def test_non_image_attachment_is_explained(easel: Running) -> None:
    f = easel.slack.add_file(b"hello", name="notes.txt", mimetype="text/plain")
    ts, _ = await easel.sender.mention("use this", files=[f])
    [call] = await easel.slack.wait_for("chat.postMessage")
    assert call.args["thread_ts"] == ts and "notes.txt" in call.args["text"] and "not an image" in call.args["text"]
    await easel.jobs_settled(1)
    assert easel.openai.requests == [] and easel.slack.calls_to("download") == []


async def test_oversized_attachment_is_explained(easel: Running) -> None:
    f = easel.slack.add_file(_png("big"), name="huge.png")
    f["size"] = 21 * 1024 * 1024
    await easel.sender.mention("edit this", files=[f])
    [call] = await easel.slack.wait_for("chat.postMessage")
    assert "huge.png" in call.args["text"] and "15 MB" in call.args["text"]
    await easel.jobs_settled(1)
    assert easel.openai.requests == []


async def test_download_returning_a_login_page_is_explained(easel: Running) -> None:
    f = easel.slack.add_file(_png("x"), name="photo.png", serve_html=True)
    ts, _ = await easel.sender.mention("edit this", files=[f])
    await easel.jobs_settled(1)
    texts = [m["text"] for m in easel.slack.thread("C0001", ts) if m.get("text")]
    assert any("web page instead of the file" in t for t in texts), texts
    assert easel.openai.requests == []


async def test_token_is_not_sent_to_a_foreign_file_host(easel: Running) -> None:
    f = easel.slack.add_file(_png("x"), name="photo.png")
    f["url_private_download"] = f["url_private"] = "https://attacker.example/steal.png"
    ts, _ = await easel.sender.mention("edit this", files=[f])
    await easel.jobs_settled(1)
    texts = [m["text"] for m in easel.slack.thread("C0001", ts) if m.get("text")]
    assert any("will not send its token" in t for t in texts), texts
    assert easel.openai.requests == []
    [job] = await easel.store.jobs.all()
    assert job.status == "failed"


async def test_one_message_is_one_generation_whatever_the_deliveries(easel: Running) -> None:
    ts, _ = await easel.sender.mention("a blue bird")
    # the same message as a `message` event, and Slack retrying both
    await easel.sender.message("<@UBOT> a blue bird", ts=ts)
    await easel.sender.mention("a blue bird", ts=ts, retry_num=1)
    await easel.sender.message("<@UBOT> a blue bird", ts=ts, retry_num=2)
    await _first_image(easel)
    assert len(await easel.store.jobs.all()) == 1
    assert len(easel.openai.create_requests()) == 1
    assert len(easel.slack.shared_files) == 1


async def test_bots_edits_and_deletions_never_trigger(easel: Running) -> None:
    ts, _ = await easel.sender.mention("a cow")
    await _first_image(easel)
    events = [
        {"type": "message", "channel": "C0001", "user": "UBOT", "bot_id": "BBOT", "text": "x", "ts": "1.1",
         "thread_ts": ts},
        {"type": "message", "channel": "C0001", "user": "UOTHER", "bot_id": "BOTHER", "text": "<@UBOT> draw",
         "ts": "1.2"},
        {"type": "message", "subtype": "bot_message", "channel": "C0001", "bot_id": "BOTHER", "text": "hi",
         "ts": "1.3", "thread_ts": ts},
        {"type": "message", "subtype": "message_changed", "channel": "C0001", "hidden": True, "ts": "1.4",
         "message": {"type": "message", "user": "U0001", "text": "<@UBOT> a dog", "ts": ts}},
        {"type": "message", "subtype": "message_deleted", "channel": "C0001", "hidden": True, "ts": "1.5",
         "deleted_ts": ts},
    ]
    for event in events:
        result = await easel.sender.post_event(event)
        assert result.status == 200, event
    assert len(await easel.store.jobs.all()) == 1
    assert len(easel.openai.create_requests()) == 1


async def test_every_subscribed_event_type_is_answered_200(easel: Running) -> None:
    for channel_type, channel in (("channel", "C1"), ("group", "G1"), ("im", "D1"), ("mpim", "G2")):
        _, result = await easel.sender.message("hello there", channel=channel, channel_type=channel_type)
        assert result.status == 200, channel_type
    _, result = await easel.sender.mention("hi", channel="C2")
    assert result.status == 200
    result = await easel.sender.post_event({"type": "message", "subtype": "channel_join", "channel": "C1",
                                            "user": "U9", "ts": "2.2", "text": "joined"})
    assert result.status == 200


async def test_job_is_stored_before_ack_and_openai_is_not_called_by_the_listener(easel: Running) -> None:
    easel.openai.latency = 30  # the generation will still be running when we look
    ts, result = await easel.sender.mention("a slow painting")
    assert result.status == 200
    [job] = await easel.store.jobs.all()  # stored before Slack heard "ok"
    assert job.message_ts == ts
    assert easel.slack.calls_to("files.completeUploadExternal") == []
    result = await easel.sender.command("a slow poster")
    assert "On it" in result.body_text
    assert len(await easel.store.jobs.all()) == 2


async def test_visible_sign_of_work_is_shown_then_cleared(easel: Running) -> None:
    easel.openai.latency = 30
    ts, _ = await easel.sender.mention("a mountain")
    await wait_until(lambda: "hourglass_flowing_sand" in easel.slack.reactions[("C0001", ts)], what="reaction")
    await wait_until(lambda: easel.openai.in_flight == 1, what="generation running")
    assert easel.slack.shared_files == []  # the sign came while the image was still being made
    easel.openai.latency = 0
    for resp in easel.openai.responses.values():  # let the running generation finish now
        if resp.task is not None:
            resp.task.cancel()
    await easel.jobs_settled(1, timeout=20)
    # taken down right after the job ended (in the background, at Slack's pace for reactions.remove)
    await wait_until(lambda: "hourglass_flowing_sand" not in easel.slack.reactions[("C0001", ts)], timeout=10,
                     what="the sign of work taken down")


async def test_replies_in_one_thread_run_in_order_each_on_the_previous(easel: Running) -> None:
    easel.openai.latency = 0.5
    ts, _ = await easel.sender.mention("a house")
    await easel.openai.wait_for_creates(1)
    await easel.sender.message("add a garden", thread_ts=ts)  # arrives while the first is generating
    await easel.sender.message("add a dog", thread_ts=ts)
    await easel.jobs_settled(3, timeout=20)
    creates = easel.openai.create_requests()
    ids = list(easel.openai.responses)
    assert [c["input"][0]["content"][0]["text"] for c in creates] == ["a house", "add a garden", "add a dog"]
    assert "previous_response_id" not in creates[0]
    assert creates[1]["previous_response_id"] == ids[0]
    assert creates[2]["previous_response_id"] == ids[1]


async def test_different_threads_generate_concurrently(easel: Running) -> None:
    easel.openai.latency = 30
    await easel.sender.mention("one", channel="C1")
    await easel.sender.mention("two", channel="C2")
    await easel.sender.mention("three", channel="C3")
    await wait_until(lambda: easel.openai.in_flight == 3, what="three generations at once")


async def test_text_answer_is_posted_as_text_and_split(easel: Running) -> None:
    ts, _ = await easel.sender.mention("something nice [[text]] [[long]]")
    await easel.jobs_settled(1)
    texts = [m["text"] for m in easel.slack.thread("C0001", ts) if m.get("text")]
    assert len(texts) >= 3 and all(len(t) <= 4000 for t in texts)
    assert sum(len(t) for t in texts) >= 8900
    assert easel.slack.shared_files == []
    [gen] = await easel.store.generations.all()
    assert gen["status"] == "text"


async def test_several_images_are_each_uploaded(easel: Running) -> None:
    ts, _ = await easel.sender.mention("two cats [[two]]")
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    await easel.jobs_settled(1)
    assert len(easel.slack.shared_files) == 2
    assert all(f["thread_ts"] == ts for f in easel.slack.shared_files)
    assert "(variant 2)" in easel.slack.shared_files[1]["initial_comment"]
    assert easel.slack.shared_files[0]["bytes"] != easel.slack.shared_files[1]["bytes"]


async def test_generation_is_recorded_with_usage(easel: Running) -> None:
    await easel.sender.mention("a robot")
    await _first_image(easel)
    [gen] = await easel.store.generations.all()
    assert gen["status"] == "posted"
    assert gen["revised_prompt"] == "A detailed rendering of: a robot"
    assert gen["slack_file_id"] == easel.slack.shared_files[0]["file_id"]
    assert gen["response_id"] == list(easel.openai.responses)[0]
    assert gen["image_call_id"].startswith("ig_")
    assert gen["image_model"] == "gpt-image-2" and gen["model"] == "gpt-5.4"
    assert gen["tool_usage"]["image_gen"]["output_tokens"] > 0
    assert gen["usage"]["input_tokens"] > 0
    assert gen["generation_ms"] is not None and gen["upload_ms"] is not None
