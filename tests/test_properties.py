"""Whatever Slack sends, Easel answers without a 5xx, its worker keeps running, and each request ends in a
clear message or a clean ignore. Driven by hypothesis through signed HTTP into the real app."""

from __future__ import annotations

import json
import time
import urllib.parse

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Running

FLAGS = ["--size", "--quality", "--format", "--compression", "--background", "--model", "--action", "--bogus",
         "—size", "--size=", "--"]
VALUES = ["1024x1024", "auto", "0x0", "99999x99999", "high", "ultra", "png", "jpg", "gif", "-1", "101", "50",
          "transparent", "gpt-image-1", "gpt-image-2", "edit", "", "x" * 300]
words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
prompts = st.one_of(
    st.lists(st.one_of(words, st.sampled_from(FLAGS), st.sampled_from(VALUES)), max_size=12).map(" ".join),
    st.text(max_size=200),
    st.just("x" * 40_000),
    st.just(""),
)
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children,
                                                                                  max_size=3)),
    max_leaves=8,
)
EVENT_KEYS = ["type", "subtype", "channel", "user", "text", "ts", "thread_ts", "files", "bot_id", "channel_type",
              "hidden", "message", "team", "event_ts"]
events = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["app_mention", "message", "reaction_added", 7]),
        "subtype": st.one_of(st.none(), st.sampled_from(["file_share", "message_changed", "bot_message", "x"])),
        "channel": st.one_of(st.sampled_from(["C0001", "D0001", "G0001"]), junk),
        "user": st.one_of(st.sampled_from(["U0001", "UBOT"]), junk),
        "text": st.one_of(prompts.map(lambda p: "<@UBOT> " + p), junk),
        "ts": st.one_of(st.just("1700000000.000100"), junk),
        "thread_ts": st.one_of(st.just("1700000000.000100"), junk),
        "files": st.one_of(junk, st.lists(st.fixed_dictionaries({}, optional={
            "id": junk, "mimetype": st.sampled_from(["image/png", "text/html", 5]), "size": junk,
            "url_private_download": junk, "name": junk}), max_size=2)),
        "bot_id": junk,
        "channel_type": st.one_of(st.sampled_from(["im", "channel"]), junk),
    },
)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


async def _worker_alive(easel: Running) -> None:
    for loop in easel.easel.worker._loops:
        assert not loop.done(), "a worker loop died"


@SETTINGS
@given(text=prompts)
async def test_any_slash_command_text_gets_a_clear_private_answer(easel: Running, text: str) -> None:
    result = await easel.sender.command(text)
    assert result.status == 200, result.body_text
    assert result.body_text.strip(), "an empty answer"
    await _worker_alive(easel)


@SETTINGS
@given(text=prompts)
async def test_any_mention_text_is_answered_or_ignored_cleanly(easel: Running, text: str) -> None:
    _, result = await easel.sender.mention(text)
    assert result.status == 200, result.body_text
    await _worker_alive(easel)


@SETTINGS
@given(event=events)
async def test_any_event_payload_never_causes_a_server_error(easel: Running, event: dict) -> None:
    result = await easel.sender.post_event(event)
    assert result.status < 500, result.body_text
    await _worker_alive(easel)


@SETTINGS
@given(form=st.dictionaries(st.sampled_from(["text", "team_id", "channel_id", "user_id", "trigger_id",
                                             "response_url", "command", "extra"]), st.text(max_size=50),
                            max_size=8))
async def test_any_command_form_never_causes_a_server_error(easel: Running, form: dict) -> None:
    form.setdefault("command", "/imagine")
    body = urllib.parse.urlencode(form).encode()
    headers = {**easel.sender.sign(body, int(time.time())), "Content-Type": "application/x-www-form-urlencoded"}
    result = await easel.sender.raw(body, headers)
    assert result.status < 500, result.body_text
    await _worker_alive(easel)


async def test_the_jobs_made_by_odd_input_all_end(easel: Running) -> None:
    """Odd but routable input becomes jobs that finish (a message or an image), never stuck ones."""
    for text in ("", "--size", "—quality high", "x" * 40_000, "\u202e\u0000 odd \U0001f600", "--model gpt-image-1"):
        await easel.sender.mention(text)
    await easel.sender.post_event({"type": "app_mention", "channel": "C0001", "user": "U0001", "ts": "1.000001",
                                   "text": "<@UBOT> hi", "files": [{"id": "F1", "mimetype": "image/png",
                                                                    "size": "big", "url_private_download": 5}]})
    jobs = await easel.jobs_settled(7, timeout=30)
    assert all(j.status in ("done", "failed") for j in jobs)
    notices = [m["text"] for m in easel.slack.messages]
    assert any("32,000" in t for t in notices)  # the 40,000-character prompt is refused with the limit
    assert json.dumps(notices)  # every answer was text Slack accepted
