"""Pure tests of handlers/payloads.py: which Slack payloads become which jobs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot import image_models, limits, options
from handlers import payloads
from handlers.payloads import Context, Routed, clean_text, is_ignored, route_command, route_event, thread_of
from storage.models import JobKind, Thread

TEAM = "T0001"
CHANNEL = "C0001"
USER = "U0USER1"
BOT_USER = "UBOT"
BOT_ID = "B0BOT"
CTX = Context(defaults=options.Defaults(), table=image_models.ModelTable())
HELP_MARK = "Easel makes and edits images"


def _message(text: str, *, ts: str = "1700000000.000100", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": CHANNEL, "channel_type": "channel", "user": USER, "ts": ts,
            "text": text, **extra}


def _mention(text: str, *, ts: str = "1700000000.000100", **extra: Any) -> dict[str, Any]:
    return {"type": "app_mention", "channel": CHANNEL, "user": USER, "ts": ts, "text": text, **extra}


def _thread(thread_ts: str, options_: dict[str, Any] | None = None) -> Thread:
    return Thread(team_id=TEAM, channel_id=CHANNEL, thread_ts=thread_ts, started_by=USER,
                  last_response_id="resp_1", last_image_file_id="F1", options=options_ or {})


def _route(event: dict[str, Any], thread: Thread | None = None, ctx: Context = CTX) -> Routed | None:
    assert not is_ignored(event, bot_user_id=BOT_USER, bot_id=BOT_ID)
    return route_event(event, team_id=TEAM, bot_user_id=BOT_USER, thread=thread, ctx=ctx)


def _file(**values: Any) -> dict[str, Any]:
    return {"id": "F0001", "name": "cat.png", "mimetype": "image/png", "size": 2048,
            "url_private_download": "https://files.slack.com/files-pri/T-F0001/download/cat.png",
            "url_private": "https://files.slack.com/files-pri/T-F0001/cat.png", **values}


# -- clean_text ------------------------------------------------------------------------------------


def _words(text: str) -> str:
    return " ".join(text.split())


def test_clean_text_removes_easels_mention_in_both_forms() -> None:
    assert clean_text("<@UBOT> a cat", BOT_USER) == "a cat"
    assert clean_text("<@UBOT|easel> a cat", BOT_USER) == "a cat"
    assert _words(clean_text("draw <@UBOT> a cat <@UBOT|easel>", BOT_USER)) == "draw a cat"
    assert "UBOT" not in clean_text("<@UBOT><@UBOT|Easel Bot>x", BOT_USER)


def test_clean_text_keeps_other_mentions() -> None:
    assert clean_text("<@UBOT> draw <@U0OTHER> as a knight", BOT_USER) == "draw <@U0OTHER> as a knight"
    assert clean_text("<@UBOT2> hi", BOT_USER) == "<@UBOT2> hi"


def test_clean_text_without_a_bot_id_keeps_mentions() -> None:
    assert clean_text("<@UBOT> a cat", None) == "<@UBOT> a cat"


def test_clean_text_unescapes() -> None:
    assert clean_text("cats &amp; dogs &lt;b&gt;", BOT_USER) == "cats & dogs <b>"


def test_clean_text_unwraps_links() -> None:
    assert clean_text("see <https://x.example/p?a=1|the page> now", BOT_USER) == "see the page now"
    assert clean_text("see <https://x.example/p> now", BOT_USER) == "see https://x.example/p now"
    assert clean_text("mail <mailto:a@b.example|a@b.example>", BOT_USER) == "mail a@b.example"


def test_clean_text_of_non_text() -> None:
    assert clean_text(None, BOT_USER) == ""
    assert clean_text(123, BOT_USER) == ""
    assert clean_text(["<@UBOT>"], BOT_USER) == ""


def test_clean_text_strips() -> None:
    assert clean_text("  <@UBOT>   \n", BOT_USER) == ""


# -- thread_of -------------------------------------------------------------------------------------


def test_thread_of() -> None:
    assert thread_of({"ts": "2.0", "thread_ts": "1.0"}) == "1.0"
    assert thread_of({"ts": "1.0", "thread_ts": "1.0"}) is None  # the root itself
    assert thread_of({"ts": "1.0"}) is None
    assert thread_of({"ts": "2.0", "thread_ts": 1.0}) is None
    assert thread_of({"ts": "2.0", "thread_ts": ""}) is None


# -- is_ignored ------------------------------------------------------------------------------------


def _ignored(event: dict[str, Any]) -> bool:
    return is_ignored(event, bot_user_id=BOT_USER, bot_id=BOT_ID)


def test_ordinary_messages_are_not_ignored() -> None:
    assert not _ignored(_message("hello"))
    assert not _ignored(_mention("<@UBOT> hello"))
    assert not _ignored(_message("look", subtype="file_share"))
    assert not _ignored(_message("also in channel", subtype="thread_broadcast", thread_ts="1.0"))


@pytest.mark.parametrize(
    "change",
    [
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "bot_message"},
        {"subtype": "channel_join"},
        {"bot_id": "B0OTHER"},
        {"bot_id": BOT_ID},
        {"bot_profile": {"name": "other"}},
        {"user": BOT_USER},
        {"hidden": True},
    ],
)
def test_ignored_events(change: dict[str, Any]) -> None:
    assert _ignored(_message("<@UBOT> draw", **change))


@pytest.mark.parametrize("key", ["user", "channel", "ts"])
def test_missing_fields_are_ignored(key: str) -> None:
    event = _message("<@UBOT> draw")
    del event[key]
    assert _ignored(event)


@pytest.mark.parametrize("key", ["user", "channel", "ts"])
@pytest.mark.parametrize("value", [None, "", 17, 1.5, ["U1"], {"id": "U1"}, True])
def test_wrong_types_are_ignored(key: str, value: Any) -> None:
    assert _ignored(_message("<@UBOT> draw", **{key: value}))


def test_edit_with_nested_message_is_ignored() -> None:
    event = {"type": "message", "subtype": "message_changed", "channel": CHANNEL, "ts": "2.0", "hidden": True,
             "message": {"user": USER, "text": "<@UBOT> a dog", "ts": "1.0"}}
    assert _ignored(event)


# -- route_event: where and whether ----------------------------------------------------------------


def test_channel_mention_starts_a_thread() -> None:
    event = _mention("<@UBOT> a fox in a bowler hat", ts="1700000000.000100")
    routed = _route(event)
    assert routed is not None
    job = routed.job
    assert job.kind is JobKind.GENERATE
    assert job.source == "mention"
    assert job.dedupe_key == f"msg:{TEAM}:{CHANNEL}:1700000000.000100"
    assert job.thread_ts == "1700000000.000100"
    assert job.message_ts == "1700000000.000100"
    assert (job.team_id, job.channel_id, job.user_id) == (TEAM, CHANNEL, USER)
    assert job.text == "a fox in a bowler hat"
    assert job.force_image is False
    assert routed.start_thread is True
    assert routed.thread_options == {}
    assert job.options.tool["model"] == "gpt-image-2"
    assert job.thread_key == f"{TEAM}:{CHANNEL}:1700000000.000100"


def test_same_message_as_message_event_has_the_same_key_and_decision() -> None:
    text = "<@UBOT> a fox --size portrait"
    as_mention = _route(_mention(text))
    as_message = _route(_message(text))
    assert as_mention is not None and as_message is not None
    assert as_message.job.dedupe_key == as_mention.job.dedupe_key
    assert as_message == as_mention


def test_mention_with_label_form() -> None:
    routed = _route(_message("<@UBOT|easel> a cat"))
    assert routed is not None and routed.job.source == "mention" and routed.job.text == "a cat"


def test_reply_in_an_owned_thread() -> None:
    routed = _route(_message("make it blue", ts="1700000005.000200", thread_ts="1700000000.000100"),
                    thread=_thread("1700000000.000100"))
    assert routed is not None
    assert routed.job.source == "reply"
    assert routed.job.kind is JobKind.GENERATE
    assert routed.job.thread_ts == "1700000000.000100"
    assert routed.job.message_ts == "1700000005.000200"
    assert routed.job.dedupe_key == f"msg:{TEAM}:{CHANNEL}:1700000005.000200"
    assert routed.start_thread is False
    assert routed.job.text == "make it blue"


def test_reply_in_an_owned_thread_keeps_its_sticky_options() -> None:
    thread = _thread("1.0", {"model": "gpt-image-2.5-sunburst"})
    routed = _route(_message("now in the rain", ts="2.0", thread_ts="1.0"), thread=thread)
    assert routed is not None
    assert routed.job.options.tool["model"] == "gpt-image-2.5-sunburst"
    assert routed.thread_options == {"model": "gpt-image-2.5-sunburst"}
    assert routed.job.options.chosen == ("model",)


def test_reply_flags_merge_into_sticky_options() -> None:
    thread = _thread("1.0", {"model": "gpt-image-2.5-sunburst", "quality": "low"})
    routed = _route(_message("bigger --quality xhigh --format webp", ts="2.0", thread_ts="1.0"), thread=thread)
    assert routed is not None
    tool = routed.job.options.tool
    assert (tool["model"], tool["quality"], tool["output_format"]) == ("gpt-image-2.5-sunburst", "xhigh", "webp")
    assert routed.thread_options == {"model": "gpt-image-2.5-sunburst", "quality": "xhigh", "format": "webp"}


def test_sticky_transparent_fallback_notice_is_shown_once() -> None:
    first = _route(_mention("<@UBOT> a logo --background transparent"))
    assert first is not None
    assert first.job.options.tool["model"] == "gpt-image-2.5-flare"
    assert any("gpt-image-2" in n and "gpt-image-2.5-flare" in n for n in first.job.options.notices)
    later = _route(_message("smaller", ts="2.0", thread_ts=first.job.thread_ts),
                   thread=_thread(first.job.thread_ts, first.thread_options))
    assert later is not None
    assert later.job.options.tool["model"] == "gpt-image-2.5-flare"
    assert later.job.options.notices == ()


def test_a_thread_on_a_shut_down_model_moves_to_its_replacement_and_is_told_once() -> None:
    thread = _thread("1.0", {"model": "gpt-image-1.5", "quality": "low"})
    routed = _route(_message("again", ts="2.0", thread_ts="1.0"), thread=thread)
    assert routed is not None and routed.job.kind is JobKind.GENERATE
    assert routed.job.options.tool["model"] == "gpt-image-2.6-sunburst"
    [notice] = routed.job.options.notices
    assert "gpt-image-1.5" in notice and "2026-12-01" in notice and "gpt-image-2.6-sunburst" in notice
    assert routed.thread_options == {"model": "gpt-image-2.6-sunburst", "quality": "low"}
    later = _route(_message("and again", ts="3.0", thread_ts="1.0"), thread=_thread("1.0", routed.thread_options))
    assert later is not None and later.job.options.notices == ()


def test_a_shut_down_model_asked_for_in_a_message_is_refused_in_the_thread() -> None:
    routed = _route(_mention("<@UBOT> a logo --model gpt-image-1-mini"))
    assert routed is not None and routed.job.kind is JobKind.NOTICE
    assert "2026-12-01" in routed.job.text and "--model gpt-image-2.6-sunburst" in routed.job.text


def test_web_and_chosen_options_are_stored_with_the_job() -> None:
    routed = _route(_mention("<@UBOT> tomorrow's weather in Lyon --web --quality high"))
    assert routed is not None
    assert routed.job.text == "tomorrow's weather in Lyon"
    assert routed.job.options.web is True and routed.job.options.chosen == ("quality", "web")
    assert routed.thread_options == {"web": True, "quality": "high"}
    assert _route(_mention("<@UBOT> a cat"), ).job.options.web is False


def test_reply_in_a_thread_that_is_not_easels_is_chatter() -> None:
    assert _route(_message("nice picture", ts="2.0", thread_ts="1.0")) is None


def test_mention_in_someone_elses_thread_starts_a_chain_there() -> None:
    routed = _route(_message("<@UBOT> draw what we said", ts="2.0", thread_ts="1.0"))
    assert routed is not None
    assert routed.job.source == "mention"
    assert routed.job.thread_ts == "1.0"
    assert routed.job.message_ts == "2.0"
    assert routed.start_thread is True
    assert routed.job.dedupe_key == f"msg:{TEAM}:{CHANNEL}:2.0"


def test_top_level_dm() -> None:
    event = {"type": "message", "channel": "D0DM", "channel_type": "im", "user": USER, "ts": "3.0",
             "text": "a lighthouse at dusk"}
    routed = _route(event)
    assert routed is not None
    assert routed.job.source == "dm"
    assert routed.job.thread_ts == "3.0"
    assert routed.start_thread is True
    assert routed.job.dedupe_key == f"msg:{TEAM}:D0DM:3.0"


def test_plain_channel_chatter_is_none() -> None:
    assert _route(_message("lunch anyone?")) is None
    assert _route(_message("ask <@U0OTHER> about it")) is None


def test_mention_of_a_user_whose_id_starts_with_easels_is_not_a_mention_of_easel() -> None:
    """Slack ids differ in length; `<@UBOT2>` is another user, not Easel (`<@UBOT>`)."""
    assert _route(_message("<@UBOT2> can you draw a cat for me?")) is None


# -- route_event: notices --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["<@UBOT>", "<@UBOT|easel>   ", "<@UBOT> --size square"])
def test_empty_mention_answers_with_help(text: str) -> None:
    routed = _route(_mention(text))
    assert routed is not None
    assert routed.job.kind is JobKind.NOTICE
    assert HELP_MARK in routed.job.text
    for name in CTX.table.available():
        assert name in routed.job.text
    assert routed.start_thread is False
    assert routed.job.thread_ts == routed.job.message_ts


def test_empty_reply_in_owned_thread_is_nothing() -> None:
    assert _route(_message("", ts="2.0", thread_ts="1.0"), thread=_thread("1.0")) is None


@pytest.mark.parametrize(
    ("text", "flag"),
    [("<@UBOT> a cat --quality ultra", "--quality"), ("<@UBOT> a cat --style noir", "--style"),
     ("<@UBOT> a cat --size", "--size"), ("<@UBOT> a cat --model dall-e-3", "dall-e-3"),
     ("<@UBOT> a cat \u2014format gif", "--format")],
)
def test_bad_flag_answers_with_a_notice_naming_it(text: str, flag: str) -> None:
    routed = _route(_mention(text))
    assert routed is not None
    assert routed.job.kind is JobKind.NOTICE
    assert flag in routed.job.text
    assert routed.start_thread is False
    assert routed.job.dedupe_key == f"msg:{TEAM}:{CHANNEL}:1700000000.000100"


def test_bad_flag_against_sticky_options_is_a_notice() -> None:
    thread = _thread("1.0", {"format": "jpeg"})
    event = _message("see-through --background transparent", ts="2.0", thread_ts="1.0")
    routed = _route(event, thread=thread)
    assert routed is not None
    assert routed.job.kind is JobKind.NOTICE
    assert "jpeg" in routed.job.text


def test_non_image_attachment_is_a_notice() -> None:
    event = _mention("<@UBOT> use this", files=[_file(name="report.pdf", mimetype="application/pdf")],
                     subtype="file_share")
    routed = _route(event)
    assert routed is not None
    assert routed.job.kind is JobKind.NOTICE
    assert "report.pdf" in routed.job.text and "not an image" in routed.job.text
    assert routed.job.files == []


def test_oversized_attachment_is_a_notice() -> None:
    big = limits.MAX_IMAGE_BYTES + 1
    routed = _route(_mention("<@UBOT> edit", files=[_file(name="huge.png", size=big)]))
    assert routed is not None
    assert routed.job.kind is JobKind.NOTICE
    assert "huge.png" in routed.job.text and "15 MB" in routed.job.text


def test_attachment_at_the_limit_is_kept() -> None:
    routed = _route(_mention("<@UBOT> edit", files=[_file(size=limits.MAX_IMAGE_BYTES)]))
    assert routed is not None and routed.job.kind is JobKind.GENERATE


def test_more_attachments_than_openai_takes_is_a_notice() -> None:
    files = [_file(id=f"F{i}", size=1000) for i in range(limits.MAX_IMAGES + 1)]
    routed = _route(_mention("<@UBOT> combine", files=files))
    assert routed is not None and routed.job.kind is JobKind.NOTICE
    assert f"there are {limits.MAX_IMAGES + 1}" in routed.job.text and f"at most {limits.MAX_IMAGES}" in routed.job.text
    routed = _route(_mention("<@UBOT> combine", files=files[:-1]))
    assert routed is not None and routed.job.kind is JobKind.GENERATE and len(routed.job.files) == limits.MAX_IMAGES


def test_attachments_larger_together_than_openai_takes_is_a_notice() -> None:
    each = limits.MAX_TOTAL_BYTES // 3 + 1
    routed = _route(_mention("<@UBOT> combine", files=[_file(id=f"F{i}", size=each) for i in range(3)]))
    assert routed is not None and routed.job.kind is JobKind.NOTICE
    assert "36 MB per message" in routed.job.text
    routed = _route(_mention("<@UBOT> combine", files=[_file(id=f"F{i}", size=each - 1) for i in range(3)]))
    assert routed is not None and routed.job.kind is JobKind.GENERATE


def test_image_attachment_is_kept_with_its_url() -> None:
    routed = _route(_mention("<@UBOT> put this logo on a mug", files=[_file()], subtype="file_share"))
    assert routed is not None
    assert routed.job.kind is JobKind.GENERATE
    assert routed.job.files == [{
        "id": "F0001", "name": "cat.png", "mimetype": "image/png", "size": 2048,
        "url": "https://files.slack.com/files-pri/T-F0001/download/cat.png",
    }]


def test_image_attachment_falls_back_to_url_private() -> None:
    routed = _route(_mention("<@UBOT> this", files=[_file(url_private_download=None)]))
    assert routed is not None
    assert routed.job.files[0]["url"] == "https://files.slack.com/files-pri/T-F0001/cat.png"


def test_attachment_without_a_prompt_still_draws() -> None:
    routed = _route(_mention("<@UBOT>", files=[_file(mimetype="image/jpeg", name="a.jpg")]))
    assert routed is not None
    assert routed.job.kind is JobKind.GENERATE
    assert routed.job.text
    assert routed.job.files[0]["mimetype"] == "image/jpeg"


def test_very_long_prompt_is_a_notice() -> None:
    routed = _route(_mention("<@UBOT> " + "a" * (payloads.MAX_PROMPT_CHARS + 1)))
    assert routed is not None
    assert routed.job.kind is JobKind.NOTICE
    assert f"{payloads.MAX_PROMPT_CHARS:,}" in routed.job.text


# -- route_command ---------------------------------------------------------------------------------


def _command(text: str, **extra: Any) -> dict[str, Any]:
    return {"command": "/imagine", "text": text, "team_id": TEAM, "channel_id": CHANNEL, "user_id": USER,
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "response_url": "https://hooks.slack.com/commands/T0001/123/abc", **extra}


@pytest.mark.parametrize("text", ["", "help", "HELP", "  help ", "--help"])
def test_command_help(text: str) -> None:
    answer = route_command(_command(text), ctx=CTX)
    assert isinstance(answer, str)
    assert HELP_MARK in answer


@pytest.mark.parametrize(
    ("text", "flag"),
    [("a cat --quality ultra", "--quality"), ("a cat --colour red", "--colour"),
     ("a cat --model gpt-image-1", "2026-10-23"), ("a cat --model gpt-image-1.5", "gpt-image-2.6-sunburst")],
)
def test_command_bad_flag_is_a_string(text: str, flag: str) -> None:
    answer = route_command(_command(text), ctx=CTX)
    assert isinstance(answer, str)
    assert flag in answer


def test_command_with_only_flags_is_a_string() -> None:
    answer = route_command(_command("--size square"), ctx=CTX)
    assert isinstance(answer, str) and "prompt" in answer


def test_command_without_trigger_is_a_string() -> None:
    assert isinstance(route_command(_command("a cat", trigger_id=None), ctx=CTX), str)


def test_command_is_a_forced_generate_job() -> None:
    routed = route_command(_command("a red fox --size landscape --format jpg"), ctx=CTX)
    assert isinstance(routed, Routed)
    job = routed.job
    assert job.kind is JobKind.GENERATE
    assert job.source == "command"
    assert job.force_image is True
    assert job.text == "a red fox"
    assert job.dedupe_key == f"cmd:{TEAM}:13345224609.738474920.8088930838d88f008e0"
    assert job.response_url == "https://hooks.slack.com/commands/T0001/123/abc"
    assert job.thread_ts is None and job.message_ts is None
    assert (job.team_id, job.channel_id, job.user_id) == (TEAM, CHANNEL, USER)
    tool = job.options.tool
    assert tool["type"] == "image_generation"
    assert (tool["size"], tool["output_format"], tool["model"]) == ("1536x1024", "jpeg", "gpt-image-2")
    assert job.options.sticky == {"size": "1536x1024", "format": "jpeg"}
    assert routed.start_thread is False


def test_two_commands_with_different_triggers_have_different_keys() -> None:
    a = route_command(_command("a cat", trigger_id="1.2.a"), ctx=CTX)
    b = route_command(_command("a cat", trigger_id="1.2.b"), ctx=CTX)
    assert isinstance(a, Routed) and isinstance(b, Routed)
    assert a.job.dedupe_key != b.job.dedupe_key


# -- property: never raise -------------------------------------------------------------------------

_odd_text = st.one_of(
    st.text(max_size=300),
    st.builds(lambda s, n: (s * n)[:40_000], st.text(min_size=1, max_size=40), st.integers(0, 2000)),
    st.sampled_from(["<@UBOT>", "<@UBOT|easel> --size", "<@UBOT> --model", "\u2014size 0x0", "&amp;&lt;<",
                     "<https://x|", "<@UBOT> \x00\ud7ff\ufffe",
                     "<@UBOT> a --background transparent --format jpg"]),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_MIMETYPES = (*payloads.IMAGE_MIMETYPES, "text/html", "application/pdf")
_files = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"id": st.one_of(st.just("F1"), _json_values)},
            optional={"name": _json_values, "title": _json_values, "size": _json_values,
                      "mimetype": st.one_of(st.sampled_from(_MIMETYPES), _json_values),
                      "url_private_download": _json_values, "url_private": _json_values},
        ),
        _json_values,
    ),
    max_size=3,
)
_keys = ("type", "subtype", "channel", "channel_type", "user", "ts", "thread_ts", "text", "files", "bot_id",
         "bot_profile", "hidden", "blocks")
_events = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries(
        {"channel": st.sampled_from(["C1", "D1", "G1"]), "user": st.sampled_from(["U1", "UBOT", "UBOT2"]),
         "ts": st.sampled_from(["1.0", "2.0"])},
        optional={"type": st.sampled_from(["message", "app_mention"]), "text": _odd_text,
                  "thread_ts": st.sampled_from(["1.0", "2.0", ""]),
                  "channel_type": st.sampled_from(["im", "channel"]),
                  "files": _files, "subtype": st.sampled_from([None, "file_share", "thread_broadcast"])},
    ),
    st.dictionaries(st.one_of(st.sampled_from(_keys), st.text(max_size=6)), _json_values, max_size=4),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(event=_events, owned=st.sampled_from([None, {}, {"model": "gpt-image-1.5"}, {"format": "jpeg"}]),
       bot_user=st.sampled_from([BOT_USER, None]))
@example(event=_mention("<@UBOT> " + "\u00e9\u200b\U0001f98a " * 10_000), owned=None, bot_user=BOT_USER)
@example(event=_message("x --size 9" * 4_000, thread_ts="1.0", ts="2.0"), owned={}, bot_user=BOT_USER)
def test_routing_never_raises_on_arbitrary_events(
    event: dict[str, Any], owned: dict[str, Any] | None, bot_user: str | None
) -> None:
    if is_ignored(event, bot_user_id=bot_user, bot_id=BOT_ID):
        return
    in_thread = thread_of(event)
    thread = _thread(in_thread, owned) if (in_thread and owned is not None) else None
    routed = route_event(event, team_id=TEAM, bot_user_id=bot_user, thread=thread, ctx=CTX)
    assert routed is None or isinstance(routed, Routed)
    if routed is not None:
        job = routed.job
        assert job.dedupe_key == f"msg:{TEAM}:{event['channel']}:{event['ts']}"
        assert job.text
        if job.kind is JobKind.GENERATE:
            assert len(job.text) <= payloads.MAX_PROMPT_CHARS
            assert job.options.tool["type"] == "image_generation"
        else:
            assert routed.start_thread is False


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(_keys), st.text(max_size=6)), _json_values, max_size=8))
def test_is_ignored_never_raises_on_arbitrary_dicts(event: dict[str, Any]) -> None:
    assert is_ignored(event, bot_user_id=BOT_USER, bot_id=BOT_ID) in (True, False)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["text", "team_id", "channel_id", "user_id", "trigger_id",
                                        "response_url"]), _json_values, max_size=6))
def test_route_command_never_raises(command: dict[str, Any]) -> None:
    answer = route_command(command, ctx=CTX)
    assert isinstance(answer, (str, Routed))
