"""Pure tests of flag parsing and resolving (bot/options.py) and the capability table (bot/image_models.py)."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import image_models, options
from bot.options import Defaults, ImageOptions, OptionError, parse, resolve

TABLE = image_models.ModelTable()
DEFAULTS = Defaults()


def _resolve(
    defaults: Defaults = DEFAULTS, table: image_models.ModelTable = TABLE, **asked: object
) -> options.Resolved:
    return resolve(ImageOptions(**asked), defaults=defaults, table=table)


def _parse_error(text: str) -> str:
    with pytest.raises(OptionError) as info:
        parse(text)
    return str(info.value)


def _resolve_error(defaults: Defaults = DEFAULTS, table: image_models.ModelTable = TABLE, **asked: object) -> str:
    with pytest.raises(OptionError) as info:
        _resolve(defaults, table, **asked)
    return str(info.value)


# -- parse: syntax ---------------------------------------------------------------------------------


def test_no_flags_gives_the_text_back_as_prompt_and_empty_options() -> None:
    prompt, asked = parse("a red fox in the snow")
    assert prompt == "a red fox in the snow"
    assert asked == ImageOptions()
    assert asked.as_dict() == {}


def test_flag_with_space_separated_value() -> None:
    prompt, asked = parse("a red fox --size 1024x1536 in the snow")
    assert asked.size == "1024x1536"
    assert prompt == "a red fox in the snow"


def test_flag_with_equals_value() -> None:
    prompt, asked = parse("a red fox --quality=high")
    assert asked.quality == "high"
    assert prompt == "a red fox"


@pytest.mark.parametrize("dash", ["\u2014", "\u2013"], ids=["em-dash", "en-dash"])
def test_slack_autocorrected_dashes_are_flags(dash: str) -> None:
    prompt, asked = parse(f"a lighthouse {dash}size landscape {dash}format=webp at dusk")
    assert asked.size == "1536x1024"
    assert asked.format == "webp"
    assert prompt == "a lighthouse at dusk"


def test_all_flags_together_and_prompt_whitespace_is_normalised() -> None:
    prompt, asked = parse(
        "  --size 1536x1024 a  cat --quality low --format webp --compression 80 "
        "--background opaque --model gpt-image-2.5-flare --action edit  on a mat  "
    )
    assert prompt == "a cat on a mat"
    assert asked.as_dict() == {
        "size": "1536x1024",
        "quality": "low",
        "format": "webp",
        "compression": 80,
        "background": "opaque",
        "model": "gpt-image-2.5-flare",
        "action": "edit",
    }


def test_only_flags_leaves_an_empty_prompt() -> None:
    prompt, asked = parse("--size square")
    assert prompt == ""
    assert asked.size == "1024x1024"


def test_flag_names_and_choice_values_are_case_insensitive() -> None:
    _, asked = parse("x --SIZE Portrait --Quality HIGH --FORMAT PNG")
    assert asked.as_dict() == {"size": "1024x1536", "quality": "high", "format": "png"}


def test_dashes_inside_words_are_not_flags() -> None:
    prompt, asked = parse("a well--known cat and a half—size dog")
    assert asked == ImageOptions()
    assert prompt == "a well--known cat and a half—size dog"


@pytest.mark.parametrize(
    ("word", "size"), [("square", "1024x1024"), ("portrait", "1024x1536"), ("landscape", "1536x1024")]
)
def test_size_words(word: str, size: str) -> None:
    assert parse(f"a cat --size {word}")[1].size == size


@pytest.mark.parametrize(
    ("value", "size"), [("1024X1536", "1024x1536"), ("1024×1024", "1024x1024"), ("0512x01024", "512x1024"),
                        ("auto", "auto"), ("AUTO", "auto")]
)
def test_size_values_are_canonicalised(value: str, size: str) -> None:
    assert parse(f"a cat --size {value}")[1].size == size


def test_jpg_is_an_alias_of_jpeg() -> None:
    assert parse("a cat --format jpg")[1].format == "jpeg"
    assert parse("a cat --format=JPG")[1].format == "jpeg"


def test_compression_is_an_int() -> None:
    assert parse("a --compression 0")[1].compression == 0
    assert parse("a --compression 100")[1].compression == 100
    assert parse("a --compression=55")[1].compression == 55


def test_model_value_is_kept_for_resolve_to_check() -> None:
    assert parse("a --model gpt-image-9")[1].model == "gpt-image-9"


# -- parse: errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flag", "allowed"),
    [
        ("a cat --quality ultra", "--quality", ["low", "medium", "high", "xhigh", "max", "auto"]),
        ("a cat --format gif", "--format", ["png", "jpeg", "webp"]),
        ("a cat --background clear", "--background", ["transparent", "opaque", "auto"]),
        ("a cat --action paint", "--action", ["auto", "generate", "edit"]),
        ("a cat --size huge", "--size", ["WIDTHxHEIGHT", "auto", "square", "portrait", "landscape"]),
        ("a cat --size 1024x", "--size", ["WIDTHxHEIGHT", "auto", "square", "portrait", "landscape"]),
        ("a cat --compression 101", "--compression", ["0", "100"]),
        ("a cat --compression -5", "--compression", ["0", "100"]),
        ("a cat --compression 8.5", "--compression", ["0", "100"]),
        ("a cat --compression high", "--compression", ["0", "100"]),
    ],
)
def test_bad_value_names_the_flag_and_the_allowed_values(text: str, flag: str, allowed: list[str]) -> None:
    message = _parse_error(text)
    assert flag in message
    for value in allowed:
        assert value in message
    assert "\n" not in message


def test_bad_value_is_quoted_back() -> None:
    assert "ultra" in _parse_error("a cat --quality ultra")


def test_unknown_flag_is_refused_and_options_listed() -> None:
    message = _parse_error("a cat --style noir")
    assert "--style" in message
    for flag in options.FLAGS:
        assert f"--{flag}" in message


def test_unknown_flag_with_em_dash() -> None:
    assert "--colour" in _parse_error("a cat \u2014colour red")


@pytest.mark.parametrize(
    "text",
    ["a cat --size", "a cat --size=", "a cat --quality --format png", "a cat --model \u2014size 1024x1024"],
)
def test_flag_without_value_is_refused(text: str) -> None:
    message = _parse_error(text)
    assert "needs a value" in message
    flag = re.search(r"`(--\w+)`", message)
    assert flag is not None and flag.group(1) in text.replace("\u2014", "--")


def test_flag_given_twice_is_refused() -> None:
    message = _parse_error("a cat --size square --quality low --size=landscape")
    assert "--size" in message and "twice" in message


def test_flag_given_twice_in_different_dash_spellings() -> None:
    assert "twice" in _parse_error("a cat --quality low \u2014quality high")


# -- parse: property -------------------------------------------------------------------------------

_FLAG_TOKEN = re.compile(r"^(?:--|\u2014|\u2013)(" + "|".join(options.FLAGS) + r")(?:=.*)?$", re.IGNORECASE)

_pieces = st.one_of(
    st.sampled_from(["--", "\u2014", "\u2013", "=", " ", "  ", "\t", "\n", "x", "X", "×", "-"]),
    st.sampled_from(list(options.FLAGS) + ["colour", "SIZE", "Model"]),
    st.sampled_from(
        list(options.QUALITIES + options.FORMATS + options.BACKGROUNDS + options.ACTIONS)
        + list(options.SIZE_WORDS) + ["jpg", "1024x1536", "16x16", "0", "100", "101", "gpt-image-1.5", "auto"]
        + list(options.COMPLEXITIES + options.FIDELITIES)
    ),
    st.text(max_size=12),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_pieces, max_size=25).map("".join))
def test_parse_only_ever_raises_option_error_and_strips_recognised_flags(text: str) -> None:
    try:
        prompt, asked = parse(text)
    except OptionError as e:
        assert str(e)
        return
    assert isinstance(asked, ImageOptions)
    for token in prompt.split():
        assert not _FLAG_TOKEN.match(token), f"flag token {token!r} left in prompt {prompt!r}"
    assert prompt == prompt.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_on_arbitrary_unicode_only_raises_option_error(text: str) -> None:
    with contextlib.suppress(OptionError):
        parse(text)


# -- resolve ---------------------------------------------------------------------------------------


def test_defaults_are_applied() -> None:
    r = _resolve()
    assert (r.model, r.size, r.quality, r.format, r.background, r.action) == (
        "gpt-image-2", "auto", "auto", "png", "auto", "auto"
    )
    assert r.compression is None
    assert r.notices == ()


def test_configured_defaults_are_applied_and_asked_values_win() -> None:
    defaults = Defaults(model="gpt-image-2.5-flare", size="1024x1536", quality="xhigh", format="webp",
                        background="opaque", compression=70)
    r = _resolve(defaults)
    assert (r.model, r.size, r.quality, r.format, r.background, r.compression) == (
        "gpt-image-2.5-flare", "1024x1536", "xhigh", "webp", "opaque", 70
    )
    r = _resolve(defaults, quality="low", size="1536x1024", compression=10)
    assert (r.quality, r.size, r.compression) == ("low", "1536x1024", 10)


def test_transparent_on_gpt_image_2_falls_back_to_a_2_5_model_with_a_notice_naming_both() -> None:
    r = _resolve(background="transparent")
    assert r.model == "gpt-image-2.5-flare"
    assert r.background == "transparent"
    assert len(r.notices) == 1
    assert "gpt-image-2" in r.notices[0] and "gpt-image-2.5-flare" in r.notices[0]
    assert r.tool()["model"] == "gpt-image-2.5-flare"
    assert "model" not in r.chosen and "background" in r.chosen


def test_transparent_on_a_capable_model_has_no_notice() -> None:
    r = _resolve(background="transparent", model="gpt-image-2.6-flare", format="webp")
    assert r.model == "gpt-image-2.6-flare"
    assert r.notices == ()


def test_transparent_from_defaults_also_falls_back() -> None:
    r = _resolve(Defaults(background="transparent"))
    assert r.model == "gpt-image-2.5-flare"
    assert r.notices


def test_transparent_fallback_takes_the_other_options_asked_for() -> None:
    r = _resolve(background="transparent", complexity="high")
    assert r.model == "gpt-image-2.6-flare"  # the first transparent model that also takes --complexity
    assert r.tool()["complexity"] == "high"


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2.5-flare"])
def test_transparent_with_jpeg_is_refused(model: str) -> None:
    message = _resolve_error(background="transparent", format="jpeg", model=model)
    assert "jpeg" in message and "png" in message and "webp" in message


def test_transparent_with_jpeg_default_format_is_refused() -> None:
    assert "jpeg" in _resolve_error(Defaults(format="jpeg"), background="transparent")


def test_transparent_refused_when_no_model_can_do_it() -> None:
    only = image_models.ImageModel(name="gpt-image-2", transparent=False, flexible_sizes=True)
    table = image_models.ModelTable(models=(only,))
    message = _resolve_error(table=table, background="transparent")
    assert "gpt-image-2" in message and "transparent" in message


def test_asked_compression_with_png_is_refused() -> None:
    message = _resolve_error(compression=50, format="png")
    assert "--compression" in message and "png" in message


def test_asked_compression_with_default_png_is_refused() -> None:
    assert "--compression" in _resolve_error(compression=50)


def test_default_compression_is_dropped_for_png() -> None:
    r = _resolve(Defaults(compression=60))
    assert r.format == "png"
    assert r.compression is None
    assert "output_compression" not in r.tool()


def test_default_compression_is_kept_for_jpeg() -> None:
    r = _resolve(Defaults(compression=60), format="jpeg")
    assert r.compression == 60
    assert r.tool()["output_compression"] == 60


def test_compression_zero_is_kept() -> None:
    r = _resolve(format="webp", compression=0)
    assert r.compression == 0
    assert r.tool()["output_compression"] == 0


@pytest.mark.parametrize(("model", "date"), [("gpt-image-1", "2026-10-23"), ("gpt-image-1.5", "2026-12-01"),
                                             ("gpt-image-1.5-2025-12-16", "2026-12-01"),
                                             ("gpt-image-1-mini", "2026-12-01"),
                                             ("chatgpt-image-latest", "2026-12-01")])
def test_a_shut_down_model_asked_for_is_refused_with_its_date_and_replacement(model: str, date: str) -> None:
    message = _resolve_error(model=model)
    assert model in message and date in message and "shut down" in message
    assert "--model gpt-image-2.6-sunburst" in message  # says what to use instead


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1.5"])
def test_a_shut_down_default_model_is_replaced_with_a_notice(model: str) -> None:
    r = _resolve(Defaults(model=model))
    assert r.model == "gpt-image-2.6-sunburst"
    assert r.replaced is not None and model in r.replaced and "gpt-image-2.6-sunburst" in r.replaced
    assert "model" not in r.chosen


def test_a_shut_down_model_from_the_thread_is_replaced_not_refused() -> None:
    r = resolve(ImageOptions(model="gpt-image-1.5", quality="high"), defaults=DEFAULTS, table=TABLE,
                explicit=["quality"])
    assert r.model == "gpt-image-2.6-sunburst" and r.quality == "high"
    assert r.replaced and "2026-12-01" in r.replaced


def test_unknown_model_lists_the_available_ones() -> None:
    message = _resolve_error(model="dall-e-3")
    assert "dall-e-3" in message
    offered = message.split("Use one of:")[1].strip().rstrip(".").split(", ")
    assert offered == ["gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.5-sunburst", "gpt-image-2.6-flare",
                       "gpt-image-2.6-sunburst"]  # no shut-down model, no dated snapshot


# -- resolve: what each model takes ----------------------------------------------------------------


@pytest.mark.parametrize("quality", ["xhigh", "max"])
def test_xhigh_and_max_are_refused_on_gpt_image_2_with_the_values_it_takes(quality: str) -> None:
    message = _resolve_error(quality=quality)
    assert f"--quality {quality}" in message and "gpt-image-2:" in message
    assert "it takes low, medium, high, auto" in message
    assert "gpt-image-2.5-flare" in message  # and where it works


@pytest.mark.parametrize("model", ["gpt-image-2.5-flare", "gpt-image-2.5-sunburst", "gpt-image-2.6-flare",
                                   "gpt-image-2.6-sunburst"])
@pytest.mark.parametrize("quality", ["xhigh", "max"])
def test_xhigh_and_max_on_2_5_and_2_6(model: str, quality: str) -> None:
    assert _resolve(model=model, quality=quality).tool()["quality"] == quality


def test_complexity_only_where_the_table_says_so() -> None:
    r = _resolve(model="gpt-image-2.6-sunburst", complexity="medium")
    assert r.tool()["complexity"] == "medium"
    for model in ("gpt-image-2", "gpt-image-2.5-flare"):
        message = _resolve_error(model=model, complexity="high")
        assert model in message and "--complexity" in message and "gpt-image-2.6-flare" in message
        assert "complexity" not in _resolve(model=model).tool()  # never sent unless asked


def test_fidelity_is_refused_where_no_model_takes_it() -> None:
    message = _resolve_error(fidelity="high")
    assert "--fidelity" in message and "no image model here" in message
    table = image_models.ModelTable(extra={"gpt-image-3": {"flexible_sizes": True, "input_fidelity": True}})
    r = _resolve(table=table, model="gpt-image-3", fidelity="high")
    assert r.tool()["input_fidelity"] == "high"
    assert "gpt-image-3" in _resolve_error(table=table, fidelity="low")  # offered where it works


def test_a_default_the_chosen_model_does_not_take_is_left_out() -> None:
    r = _resolve(Defaults(model="gpt-image-2.5-flare", quality="max", complexity="high"), model="gpt-image-2")
    assert r.quality == "auto" and "complexity" not in r.tool()
    assert r.notices == ()


def test_moderation_and_web_come_from_the_defaults_and_web_from_the_request() -> None:
    r = _resolve(Defaults(moderation="low", web=True))
    assert r.tool()["moderation"] == "low" and r.web is True
    assert _resolve(Defaults(web=True), web=False).web is False
    assert _resolve(web=True).web is True
    assert _resolve().tool()["moderation"] == "auto"


# -- resolve: sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["auto", "1024x1024", "1024x1536", "1536x1024"])
@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.6-sunburst"])
def test_fixed_sizes_and_auto_work_on_every_model(model: str, size: str) -> None:
    assert _resolve(model=model, size=size).size == size


@pytest.mark.parametrize("size", ["2048x2048", "1024x1792", "512x512", "3840x2160"])
def test_a_fixed_size_model_only_takes_fixed_sizes(size: str) -> None:
    table = image_models.ModelTable(extra={"gpt-image-3": {}})
    message = _resolve_error(table=table, model="gpt-image-3", size=size)
    assert size in message
    for fixed in image_models.FIXED_SIZES:
        assert fixed in message


@pytest.mark.parametrize(
    "size",
    ["2048x2048", "3840x2160", "2160x3840", "3840x1280", "1280x3840", "2880x2880", "1024x2048", "1616x1024"],
)
def test_gpt_image_2_takes_flexible_sizes(size: str) -> None:
    r = _resolve(size=size)
    assert r.size == size
    assert r.tool()["size"] == size


@pytest.mark.parametrize(
    ("size", "why"),
    [
        ("1000x1000", "multiples of 16"),
        ("1024x1000", "multiples of 16"),
        ("3840x1264", "3 times"),
        ("1024x3088", "3 times"),
        ("4096x2048", "3840"),  # edge too long
        ("2896x2896", "8294400"),  # pixel cap, edges fine
        ("3840x2176", "8294400"),
    ],
)
def test_gpt_image_2_size_rules(size: str, why: str) -> None:
    message = _resolve_error(size=size)
    assert size in message and why in message


def test_size_with_a_zero_side_is_refused() -> None:
    """A 0x0 image cannot be drawn: the size check must refuse it instead of sending it to OpenAI."""
    message = _resolve_error(size="0x0")
    assert "0x0" in message


def test_transparent_fallback_is_checked_against_the_fallback_models_sizes() -> None:
    table = image_models.ModelTable(models=(
        image_models.ImageModel(name="gpt-image-2", transparent=False, flexible_sizes=True),
        image_models.ImageModel(name="fixed", transparent=True)))
    message = _resolve_error(table=table, background="transparent", size="2048x2048")
    assert "transparent" in message


def test_flags_parsed_then_resolved() -> None:
    _, asked = parse("a fox \u2014size portrait --format jpg --compression 40 --quality high")
    r = resolve(asked, defaults=DEFAULTS, table=TABLE)
    assert r.tool() == {
        "type": "image_generation",
        "model": "gpt-image-2",
        "size": "1024x1536",
        "quality": "high",
        "output_format": "jpeg",
        "background": "auto",
        "action": "auto",
        "moderation": "auto",
        "output_compression": 40,
    }


def test_tool_dict_without_compression() -> None:
    r = _resolve(model="gpt-image-2.5-sunburst", background="opaque", action="edit", quality="medium")
    assert r.tool() == {
        "type": "image_generation",
        "model": "gpt-image-2.5-sunburst",
        "size": "auto",
        "quality": "medium",
        "output_format": "png",
        "background": "opaque",
        "action": "edit",
        "moderation": "auto",
    }


def test_resolved_as_dict_has_no_notices_and_no_nones() -> None:
    r = _resolve(background="transparent")
    d = r.as_dict()
    assert "notices" not in d and "compression" not in d and "chosen" not in d
    assert d["model"] == "gpt-image-2.5-flare"


# -- the model table -------------------------------------------------------------------------------


def test_builtin_table() -> None:
    assert TABLE.available() == ["gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.5-sunburst",
                                 "gpt-image-2.6-flare", "gpt-image-2.6-sunburst"]
    for gone, date in (("gpt-image-1", "2026-10-23"), ("gpt-image-1.5", "2026-12-01"),
                       ("gpt-image-1.5-2025-12-16", "2026-12-01"), ("gpt-image-1-mini", "2026-12-01"),
                       ("chatgpt-image-latest", "2026-12-01")):
        model = TABLE.get(gone)
        assert model.shutdown_date == date and model.replacement == "gpt-image-2.6-sunburst"
        assert TABLE.is_shut_down(gone)
    assert TABLE.get("nope") is None
    assert TABLE.transparent_fallback().name == "gpt-image-2.5-flare"
    two = TABLE.get("gpt-image-2")
    assert not two.transparent and two.flexible_sizes and not two.input_fidelity and not two.complexity
    assert "xhigh" not in two.qualities
    for name in ("gpt-image-2.5-flare", "gpt-image-2.5-sunburst"):
        m = TABLE.get(name)
        assert m.transparent and {"xhigh", "max"} <= set(m.qualities) and not m.complexity
    for name in ("gpt-image-2.6-flare", "gpt-image-2.6-sunburst"):
        m = TABLE.get(name)
        assert m.transparent and {"xhigh", "max"} <= set(m.qualities) and m.complexity == ("low", "medium", "high")
    assert TABLE.get("gpt-image-2-2026-04-21").snapshot_of == "gpt-image-2"


def test_the_table_goes_by_the_day_it_is_given() -> None:
    import datetime

    day = [datetime.date(2026, 11, 30)]
    table = image_models.ModelTable(today=lambda: day[0])
    assert not table.is_shut_down("gpt-image-1.5") and table.ending_soon("gpt-image-1.5")
    assert table.days_left("gpt-image-1.5") == 1
    day[0] = datetime.date(2026, 12, 1)
    assert table.is_shut_down("gpt-image-1.5") and not table.ending_soon("gpt-image-1.5")
    assert table.chat_model("gpt-5") == "gpt-5" and table.ending_soon("gpt-5")
    day[0] = datetime.date(2026, 12, 11)
    assert table.chat_model("gpt-5") == "gpt-5.4" and table.chat_model("gpt-5.5") == "gpt-5.5"


def test_what_openai_says_goes_over_the_built_in_data() -> None:
    table = image_models.ModelTable()
    table.learn(listed={"gpt-image-2": "2026-11-20", "gpt-image-1.5": None},
                lacks={"gpt-image-2.5-flare": ["transparent", "quality:max"]})
    assert table.is_shut_down("gpt-image-2") and not table.is_shut_down("gpt-image-1.5")
    flare = table.get("gpt-image-2.5-flare")
    assert not flare.transparent and "max" not in flare.qualities and "xhigh" in flare.qualities
    assert table.transparent_fallback().name == "gpt-image-2.5-sunburst"
    table.learn(listed={}, lacks={})  # replaced, not added to
    assert table.get("gpt-image-2.5-flare").transparent and not table.is_shut_down("gpt-image-2")


def test_extra_model_is_usable() -> None:
    table = image_models.ModelTable(extra={"gpt-image-3": {"transparent": True, "flexible_sizes": True}})
    assert "gpt-image-3" in table.available()
    r = _resolve(table=table, model="gpt-image-3", size="2048x1024", background="transparent")
    assert r.model == "gpt-image-3"
    assert r.notices == ()
    assert r.tool()["model"] == "gpt-image-3"
    # still unknown in the built-in table
    assert "gpt-image-3" in _resolve_error(model="gpt-image-3")


def test_extra_model_as_the_default() -> None:
    table = image_models.ModelTable(extra={"gpt-image-3": {"transparent": False}})
    r = _resolve(Defaults(model="gpt-image-3"), table)
    assert r.model == "gpt-image-3"
    r = _resolve(Defaults(model="gpt-image-3"), table, background="transparent")
    assert r.model == "gpt-image-2.5-flare"
    assert "gpt-image-3" in r.notices[0] and "gpt-image-2.5-flare" in r.notices[0]


def test_extra_can_override_a_builtin_and_fallback_picks_the_first_capable() -> None:
    table = image_models.ModelTable(extra={"gpt-image-2.5-flare": {"transparent": False}})
    assert table.transparent_fallback().name == "gpt-image-2.5-sunburst"
    r = _resolve(table=table, background="transparent")
    assert r.model == "gpt-image-2.5-sunburst"


def test_extra_models_written_for_an_older_release_still_work() -> None:
    table = image_models.ModelTable(extra={"gpt-image-3": {"transparent": True, "input_fidelity": True,
                                                     "retired": "2030-01-01", "max_edge": 2048}})
    m = table.get("gpt-image-3")
    assert m.shutdown_date == "2030-01-01" and m.input_fidelity == ("high", "low") and m.max_edge == 2048
    table = image_models.ModelTable(extra={"gpt-image-3": {"qualities": ["low", "max"], "complexity": ["high"],
                                                     "shutdown_date": "2020-01-01", "replacement": "gpt-image-2"}})
    m = table.get("gpt-image-3")
    assert m.qualities == ("low", "max") and m.complexity == ("high",) and table.is_shut_down("gpt-image-3")
    assert table.replacement("gpt-image-3").name == "gpt-image-2"


def test_fallback_is_an_extra_model_when_no_builtin_can() -> None:
    table = image_models.ModelTable(
        models=(image_models.ImageModel(name="gpt-image-2", transparent=False, flexible_sizes=True),),
        extra={"gpt-image-3": {"transparent": True}, "gpt-image-4": {"transparent": True}},
    )
    assert table.transparent_fallback().name == "gpt-image-3"


def test_a_retired_model_is_never_the_fallback() -> None:
    table = image_models.ModelTable(
        models=(
            image_models.ImageModel(name="old", transparent=True, shutdown_date="2020-01-01"),
            image_models.ImageModel(name="gpt-image-2", transparent=False, flexible_sizes=True),
            image_models.ImageModel(name="new", transparent=True),
        )
    )
    assert table.transparent_fallback().name == "new"
    assert table.available() == ["gpt-image-2", "new"]


def test_extra_with_an_unknown_capability_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        image_models.ModelTable(extra={"gpt-image-3": {"sparkles": True}})


def test_size_problem_directly() -> None:
    flex = image_models.ImageModel(name="flex", flexible_sizes=True, max_edge=2048, max_pixels=2048 * 1024)
    assert image_models.size_problem(flex, "2048x1024") is None
    assert "2048" in image_models.size_problem(flex, "2064x1024")
    assert image_models.size_problem(flex, "1024x1024") is None
    fixed = image_models.ImageModel(name="fixed")
    assert image_models.size_problem(fixed, "auto") is None
    assert "fixed" in image_models.size_problem(fixed, "512x512")
