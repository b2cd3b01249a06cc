"""The price table: exact costs from OpenAI's reported usage, unpriced models never free, overrides, and a
worst case that bounds what a request can cost."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.prices import BUILTIN, Cost, Prices, shown

USAGE = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 200, "cache_write_tokens": 0},
         "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1300}
TOOL_USAGE = {"image_gen": {"input_tokens": 500, "input_tokens_details": {"image_tokens": 400, "text_tokens": 100},
                            "output_tokens": 1768, "total_tokens": 2268}}


def test_the_image_tools_tokens_are_priced_at_the_image_models_row() -> None:
    cost = Prices().cost(chat_model="gpt-5.4", image_model="gpt-image-2", usage=None, tool_usage=TOOL_USAGE)
    # 100 text in at $5, 400 image in at $8, 1768 image out at $30, per million: 0.0005 + 0.0032 + 0.05304
    assert cost == Cost(56_740)


def test_the_conversational_models_tokens_are_counted_and_flagged_when_unpriced() -> None:
    cost = Prices().cost(chat_model="gpt-5.4", image_model="gpt-image-2", usage=USAGE, tool_usage=None)
    # the stand-in: 800 in at $5, 200 cached at $1.25, 300 out at $30
    assert cost == Cost(4_000 + 250 + 9_000, unpriced=("gpt-5.4",))
    priced = Prices({"gpt-5.4": {"text_in": "2.5", "cached_in": "0.25", "text_out": "15"}})
    assert priced.cost(chat_model="gpt-5.4", image_model=None, usage=USAGE, tool_usage=None) == Cost(
        2_000 + 50 + 4_500)


def test_an_unknown_image_model_is_priced_at_the_dearest_row_never_free() -> None:
    dear = Prices({"gpt-image-9": {"text_in": 1, "cached_in": 1, "text_out": 1, "image_in": 1, "image_out": 90}})
    cost = dear.cost(chat_model="x", image_model="gpt-image-10", usage=None, tool_usage=TOOL_USAGE)
    assert cost.unpriced == ("gpt-image-10",)
    assert cost.micros >= Prices().cost(chat_model="x", image_model="gpt-image-2", usage=None,
                                        tool_usage=TOOL_USAGE).micros


def test_costs_are_exact_and_round_up() -> None:
    one = Prices().cost(chat_model="c", image_model="gpt-image-2", usage=None,
                        tool_usage={"image_gen": {"input_tokens": 1, "output_tokens": 0}})
    assert one == Cost(5)  # $0.000005 exactly
    tiny = Prices({"gpt-image-2": {"text_in": "0.1", "cached_in": 0, "text_out": 0, "image_in": 0, "image_out": 0}})
    assert tiny.cost(chat_model="c", image_model="gpt-image-2", usage=None,
                     tool_usage={"image_gen": {"input_tokens": 1}}).micros == 1  # $0.0000001 rounds up, not to 0
    total = sum((Prices().cost(chat_model="c", image_model="gpt-image-2", usage=None, tool_usage=TOOL_USAGE)
                 for _ in range(1000)), Cost(0))
    assert total.micros == 56_740_000


@pytest.mark.parametrize(("quality", "dollars"), [("low", "0.006"), ("medium", "0.053"), ("high", "0.211")])
def test_the_worst_case_bounds_a_1024_image_at_its_quality(quality: str, dollars: str) -> None:
    worst = Prices().worst_case(chat_model="gpt-5.4", image_model="gpt-image-2", quality=quality, size="1024x1024")
    assert worst >= int(Decimal(dollars) * 1_000_000)
    assert worst < int(Decimal(dollars) * 1_000_000) + 200_000  # the chat turn's bound, not a multiple


def test_the_worst_case_grows_with_size_previews_images_and_inputs() -> None:
    p = Prices()
    base = p.worst_case(chat_model="c", image_model="gpt-image-2", quality="high", size="1024x1024")
    assert p.worst_case(chat_model="c", image_model="gpt-image-2", quality="high", size="2048x2048") > base
    assert p.worst_case(chat_model="c", image_model="gpt-image-2", quality="high", size="1024x1024",
                        previews=3) > base
    assert p.worst_case(chat_model="c", image_model="gpt-image-2", quality="high", size="1024x1024",
                        input_images=2) > base
    assert p.worst_case(chat_model="c", image_model="gpt-image-2", quality="max", size="1024x1024") > base


def test_what_people_see() -> None:
    assert shown(42_000) == "≈ $0.042"
    assert shown(41_001) == "≈ $0.042"  # never shown as less than it is
    assert shown(1_234_567) == "≈ $1.24"


def test_every_current_image_model_has_a_price() -> None:
    from bot.image_models import ModelTable

    for name in ModelTable().available():
        assert name in BUILTIN, name
