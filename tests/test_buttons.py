"""The buttons under every image, the Edit modal and its masks, and the "Edit with Easel" shortcut: through
signed HTTP, real Bolt, slack_sdk and openai, against the fakes, on both databases."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from PIL import Image

from bot import buttons
from storage import Store
from tests.conftest import Running, wait_until


def _png(width: int, height: int, *, mode: str = "RGBA", fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image = Image.new(mode, (width, height), (0, 0, 0, 0) if mode == "RGBA" else 0)
    image.save(out, format=fmt)
    return out.getvalue()


def _buttons_messages(easel: Running, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in easel.slack.messages if m.get("thread_ts") == thread_ts and m.get("blocks")]


def _values(message: dict[str, Any]) -> dict[str, list[str]]:
    """action id -> the values of its buttons in the message, in order."""
    out: dict[str, list[str]] = {}
    for block in message["blocks"]:
        for el in block.get("elements", []) if block["type"] == "actions" else []:
            out.setdefault(el["action_id"], []).append(el["value"])
    return out


async def _image(easel: Running, text: str = "a lighthouse at dusk", **kw: Any) -> tuple[str, dict[str, Any]]:
    """Mention Easel; wait for the image and its buttons. Returns (thread ts, buttons message)."""
    ts, _ = await easel.sender.mention(text, **kw)
    await easel.jobs_settled()
    [message] = _buttons_messages(easel, ts)
    return ts, message


async def _click(easel: Running, action_id: str, file_id: str, message: dict[str, Any], *, user: str = "U0001",
                 channel: str = "C0001", action_ts: float | None = None, key: str = "r1",
                 trigger_id: str | None = None) -> Any:
    payload = easel.sender.block_actions_payload(
        action_id, value=file_id, block_id="easel.image.1", channel=channel, user=user,
        message_ts=message["ts"], thread_ts=message["thread_ts"], response_url=easel.slack.response_url(key))
    if action_ts is not None:
        payload["actions"][0]["action_ts"] = f"{action_ts:.6f}"
    if trigger_id is not None:
        payload["trigger_id"] = trigger_id
    result = await easel.sender.action(payload)
    assert result.status == 200
    return result


async def test_every_image_comes_with_buttons_naming_it(easel: Running) -> None:
    ts, message = await _image(easel, "two takes on a lighthouse [[two]]")
    files = [f["file_id"] for f in easel.slack.shared_files]
    assert len(files) == 2
    assert _values(message) == {action: files for action in (buttons.REROLL, buttons.VARY, buttons.HD, buttons.EDIT)}
    # right after the images, before anything else of the answer
    thread = easel.slack.thread("C0001", ts)
    shares = [i for i, m in enumerate(thread) if m.get("subtype") == "file_share"]
    assert thread.index(next(m for m in thread if m.get("blocks") and m["user"] == "UBOT")) == max(shares) + 1
    rows = [g for g in await easel.store.generations.all() if g["status"] == "posted"]
    assert [(g["slack_file_id"], g["width"], g["height"]) for g in rows] == [(f, 1024, 1024) for f in files]


async def test_a_webp_image_gets_its_buttons_too(easel: Running) -> None:
    _, message = await _image(easel, "a lighthouse --format webp")
    [shared] = easel.slack.shared_files
    assert shared["filename"].endswith(".webp")
    assert _values(message)[buttons.HD] == [shared["file_id"]]
    assert not any(b["type"] == "image" for b in message["blocks"])  # Slack shows no webp in an image block


async def test_reroll_is_a_sibling_vary_a_branch_and_the_next_reply_chains_on_the_newest(easel: Running) -> None:
    ts, first_buttons = await _image(easel, "a lighthouse at dusk")
    await easel.sender.message("make it stormy", thread_ts=ts)
    await easel.jobs_settled(2)
    first, second = [f["file_id"] for f in easel.slack.shared_files]
    r1, r2 = list(easel.openai.responses)
    [_, second_buttons] = _buttons_messages(easel, ts)

    await _click(easel, buttons.REROLL, second, second_buttons)
    await easel.jobs_settled(3)
    reroll = easel.openai.create_requests()[2]
    asked = easel.openai.create_requests()[1]
    assert reroll["previous_response_id"] == r1  # where the rerolled image's turn began: a sibling of it
    assert reroll["input"][0]["content"][0]["text"] == "make it stormy"
    assert reroll["tools"][0] == asked["tools"][0]
    assert reroll["tool_choice"] == {"type": "image_generation"}
    assert len(easel.slack.shared_files) == 3 and easel.slack.shared_files[2]["thread_ts"] == ts
    # the sign of work went on the buttons message, and came off
    jobs = await easel.store.jobs.all()
    assert jobs[2].source == "button" and jobs[2].message_ts == second_buttons["ts"]
    assert easel.slack.calls_to("reactions.add")[-1].args["timestamp"] == second_buttons["ts"]

    await _click(easel, buttons.VARY, first, first_buttons)
    await easel.jobs_settled(4)
    vary = easel.openai.create_requests()[3]
    assert vary["previous_response_id"] == r1  # on the first image's own response: a branch
    assert vary["tools"][0]["action"] == "edit"
    assert vary["input"][0]["content"][0]["text"] == buttons.VARY_PROMPT
    r4 = list(easel.openai.responses)[3]

    await easel.sender.message("now add a boat", thread_ts=ts)
    await easel.jobs_settled(5)
    assert easel.openai.create_requests()[4]["previous_response_id"] == r4  # the newest answer
    rows = [g for g in await easel.store.generations.all() if g["status"] == "posted"]
    assert [g["parent_response_id"] for g in rows] == [None, r1, r1, r1, r4]
    assert r2 != r4


async def test_hd_renders_at_the_best_quality_and_the_largest_size_of_the_same_shape(easel: Running) -> None:
    _, message = await _image(easel, "a lighthouse --size 1536x1024 --quality low")
    [shared] = easel.slack.shared_files
    await _click(easel, buttons.HD, shared["file_id"], message)
    await easel.jobs_settled(2)
    hd = easel.openai.create_requests()[1]
    tool = hd["tools"][0]
    assert tool["quality"] == "high"  # gpt-image-2's best
    assert tool["size"] == "3520x2352"  # 3:2, as large as 3840 a side and 3840x2160 pixels allow
    assert tool["model"] == "gpt-image-2"
    assert hd["previous_response_id"] == list(easel.openai.responses)[0]
    assert len(easel.slack.shared_files) == 2


async def test_a_double_click_is_one_job(easel: Running) -> None:
    _, message = await _image(easel)
    [shared] = easel.slack.shared_files
    now = time.time()
    await _click(easel, buttons.REROLL, shared["file_id"], message, action_ts=now)
    await _click(easel, buttons.REROLL, shared["file_id"], message, action_ts=now + 1.9)
    await _click(easel, buttons.REROLL, shared["file_id"], message, action_ts=now + 0.4, user="U0002")
    await _click(easel, buttons.VARY, shared["file_id"], message, action_ts=now + 0.5)
    jobs = await easel.jobs_settled(4)
    assert sorted((j.user_id, j.text == buttons.VARY_PROMPT) for j in jobs[1:]) == [
        ("U0001", False), ("U0001", True), ("U0002", False)]
    # two deliveries at the same moment, a little apart in Slack's clock: one job
    later = now + 10
    await asyncio.gather(_click(easel, buttons.HD, shared["file_id"], message, action_ts=later),
                         _click(easel, buttons.HD, shared["file_id"], message, action_ts=later + 0.6))
    await easel.jobs_settled(5)
    assert len(await easel.store.jobs.all()) == 5
    assert len(easel.openai.create_requests()) == 5


async def test_clicks_two_and_a_half_seconds_apart_are_two(store: Store) -> None:
    at = 1_800_000_000.25
    assert await store.clicks.claim("btn:T:U:easel.reroll:F", at=at, now=at)
    assert not await store.clicks.claim("btn:T:U:easel.reroll:F", at=at + 1.99, now=at + 2)
    assert await store.clicks.claim("btn:T:U:easel.reroll:F", at=at + 2.5, now=at + 3)
    assert await store.clicks.claim("btn:T:U2:easel.reroll:F", at=at, now=at)


async def test_a_button_for_an_image_that_is_not_easels_there_is_refused_politely(easel: Running) -> None:
    _, message = await _image(easel)
    [shared] = easel.slack.shared_files
    await _click(easel, buttons.REROLL, shared["file_id"], message, channel="C0002", key="elsewhere")
    await _click(easel, buttons.VARY, "F999999999", message, key="unknown")
    replies = await easel.slack.wait_for("response_url", count=2)
    for reply in replies:
        assert reply.args["response_type"] == "ephemeral" and reply.args["replace_original"] is False
        assert "no longer points at an image Easel made" in reply.args["text"]
    assert len(await easel.store.jobs.all()) == 1
    assert len(easel.openai.create_requests()) == 1


async def test_buttons_work_in_another_process_on_the_same_database(easel_factory: Any) -> None:
    first = await easel_factory()
    _, message = await _image(first)
    [shared] = first.slack.shared_files
    await first.easel.worker.stop(grace=0.5)  # the process that posted the image is gone
    second = await easel_factory()
    await _click(second, buttons.VARY, shared["file_id"], message)
    await wait_until(lambda: len(second.slack.shared_files) == 2, what="the variation")
    await second.jobs_settled(2)


async def _open_edit(easel: Running, file_id: str, message: dict[str, Any]) -> dict[str, Any]:
    await _click(easel, buttons.EDIT, file_id, message)
    [opened] = await easel.slack.wait_for("views.open")
    [view] = easel.slack.views.values()
    assert opened.args["trigger_id"]
    return view


def _submission(easel: Running, view: dict[str, Any], instruction: str, *, mask: dict[str, Any] | None = None,
                size: str | None = None) -> dict[str, Any]:
    blocks = {b["block_id"]: b["element"] for b in view["blocks"]}
    values: dict[str, Any] = {
        "instruction": {"type": "plain_text_input", "value": instruction},
        "mask": {"type": "file_input", "files": [mask] if mask else []},
        "size": {"type": "plain_text_input", "value": size or blocks["size"]["initial_value"]},
    }
    for name in ("quality", "format", "background"):
        values[name] = {"type": "static_select", "selected_option": blocks[name].get("initial_option")}
    return easel.sender.view_submission_payload(view, values)


async def test_edit_opens_a_modal_prefilled_from_the_image(easel: Running) -> None:
    _, message = await _image(easel, "a lighthouse --quality medium --format jpeg")
    [shared] = easel.slack.shared_files
    view = await _open_edit(easel, shared["file_id"], message)
    blocks = {b["block_id"]: b["element"] for b in view["blocks"]}
    assert view["callback_id"] == buttons.EDIT_VIEW
    assert blocks["mask"]["type"] == "file_input" and blocks["mask"]["filetypes"] == ["png"]
    assert blocks["size"]["initial_value"] == "1024x1024"
    assert blocks["quality"]["initial_option"]["value"] == "medium"
    assert blocks["format"]["initial_option"]["value"] == "jpeg"
    assert blocks["background"]["initial_option"]["value"] == "auto"
    assert len(await easel.store.jobs.all()) == 1  # opening the modal makes no job


async def test_a_mask_that_cannot_be_used_is_refused_in_the_modal(easel: Running) -> None:
    _, message = await _image(easel)
    [shared] = easel.slack.shared_files
    view = await _open_edit(easel, shared["file_id"], message)
    cases = {
        "no transparency": (_png(1024, 1024, mode="RGB"), "has no transparency"),
        "wrong size": (_png(512, 512), "is 512x512 pixels but the image is 1024x1024"),
        "not a PNG": (_png(1024, 1024, mode="RGB", fmt="JPEG"), "must be a PNG"),
    }
    for content, expected in cases.values():
        mask = easel.slack.add_file(content, name="mask.png")
        result = await easel.sender.action(_submission(easel, view, "make the sky stormy", mask=mask))
        assert result.status == 200
        assert result.json["response_action"] == "errors"
        assert expected in result.json["errors"]["mask"]
    result = await easel.sender.action(_submission(easel, view, "make it stormy", size="1000x1000"))
    assert result.json["response_action"] == "errors" and "16" in result.json["errors"]["size"]
    assert len(await easel.store.jobs.all()) == 1
    assert len(easel.openai.create_requests()) == 1  # nothing went to OpenAI


async def test_a_masked_edit_sends_the_image_and_its_mask(easel: Running) -> None:
    ts, message = await _image(easel)
    [shared] = easel.slack.shared_files
    view = await _open_edit(easel, shared["file_id"], message)
    mask = easel.slack.add_file(_png(1024, 1024), name="mask.png")
    result = await easel.sender.action(_submission(easel, view, "put a boat in the bay", mask=mask))
    assert result.status == 200 and not result.body_text  # the modal closes
    await easel.jobs_settled(2)
    edit = easel.openai.create_requests()[1]
    tool = edit["tools"][0]
    assert tool["input_image_mask"]["image_url"].startswith("data:image/png;base64,")
    assert tool["action"] == "edit"
    [text, image] = edit["input"][0]["content"]
    assert text["text"] == "put a boat in the bay" and image["type"] == "input_image"
    assert edit["previous_response_id"] == list(easel.openai.responses)[0]
    assert easel.slack.shared_files[1]["thread_ts"] == ts
    assert len(_buttons_messages(easel, ts)) == 2  # the edit comes with buttons too


async def test_an_edit_without_a_mask_chains_on_the_image(easel: Running) -> None:
    ts, message = await _image(easel)
    [shared] = easel.slack.shared_files
    view = await _open_edit(easel, shared["file_id"], message)
    await easel.sender.action(_submission(easel, view, "warmer light", size="1536x1024"))
    await easel.jobs_settled(2)
    edit = easel.openai.create_requests()[1]
    assert "input_image_mask" not in edit["tools"][0] and edit["tools"][0]["size"] == "1536x1024"
    assert [p["type"] for p in edit["input"][0]["content"]] == ["input_text"]
    assert edit["previous_response_id"] == list(easel.openai.responses)[0]


async def test_an_expired_trigger_is_told_privately(easel: Running) -> None:
    _, message = await _image(easel)
    [shared] = easel.slack.shared_files
    await _click(easel, buttons.EDIT, shared["file_id"], message, trigger_id=f"{int(time.time()) - 10}.1.abc")
    [reply] = await easel.slack.wait_for("response_url")
    assert "Edit window" in reply.args["text"] and reply.args["response_type"] == "ephemeral"
    assert easel.slack.views == {}


async def test_the_shortcut_edits_the_image_of_any_message_in_its_thread(easel: Running) -> None:
    photo = easel.slack.add_file(_png(640, 480), name="photo.png")
    posted = easel.slack.add_message("C0001", "our new office", files=[photo])
    payload = easel.sender.message_action_payload(posted, callback_id=buttons.SHORTCUT)
    assert (await easel.sender.action(payload)).status == 200
    [view] = (await easel.slack.wait_for("views.open")) and easel.slack.views.values()
    assert {b["block_id"]: b["element"] for b in view["blocks"]}["size"]["initial_value"] == "640x480"
    mask = easel.slack.add_file(_png(640, 480), name="mask.png")
    wrong = easel.slack.add_file(_png(480, 640), name="mask.png")
    refused = await easel.sender.action(_submission(easel, view, "paint the walls green", mask=wrong, size="auto"))
    assert "480x640" in refused.json["errors"]["mask"]
    result = await easel.sender.action(_submission(easel, view, "paint the walls green", mask=mask, size="auto"))
    assert result.status == 200
    await easel.jobs_settled(1)
    [edit] = easel.openai.create_requests()
    assert "previous_response_id" not in edit
    assert [p["type"] for p in edit["input"][0]["content"]] == ["input_text", "input_image"]
    assert "input_image_mask" in edit["tools"][0]
    [shared] = easel.slack.shared_files
    assert shared["thread_ts"] == posted["ts"]  # in that message's thread
    downloads = easel.slack.calls_to("download")
    assert downloads and all(d.headers["Authorization"] == f"Bearer {easel.slack.bot_token}" for d in downloads)
    # the thread is Easel's now: a reply there edits the new image
    await easel.sender.message("and a plant", thread_ts=posted["ts"])
    await easel.jobs_settled(2)
    assert easel.openai.create_requests()[1]["previous_response_id"] == list(easel.openai.responses)[0]


async def test_the_shortcut_on_a_message_without_an_image_says_so(easel: Running) -> None:
    posted = easel.slack.add_message("C0001", "just words")
    payload = easel.sender.message_action_payload(posted, callback_id=buttons.SHORTCUT,
                                                  response_url=easel.slack.response_url("words"))
    await easel.sender.action(payload)
    [reply] = await easel.slack.wait_for("response_url")
    assert "carries no image" in reply.args["text"]
    assert easel.slack.views == {} and await easel.store.jobs.all() == []


async def test_clicks_count_towards_the_per_person_cap(easel_factory: Any) -> None:
    easel = await easel_factory(MAX_QUEUED_PER_USER="1")
    _, message = await _image(easel)
    [shared] = easel.slack.shared_files
    gate = easel.slack.gate("files.completeUploadExternal")  # the reroll's image waits to be shared
    await _click(easel, buttons.REROLL, shared["file_id"], message)
    await easel.slack.wait_for("files.completeUploadExternal", count=2)
    await _click(easel, buttons.VARY, shared["file_id"], message)
    await easel.slack.wait_until(lambda: "no_entry_sign" in easel.slack.reactions[("C0001", message["ts"])])
    gate.set()
    await easel.jobs_settled()
    assert len(easel.openai.create_requests()) == 2  # the vary over the cap went nowhere
    assert any("You already have 1 requests in progress" in m["text"] for m in easel.slack.messages)
