"""Every generation's cost: computed from what OpenAI reported, stored exactly, shown with the image, counted in
/metrics; on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

from tests.conftest import Running

PER_MILLION = Decimal(1_000_000)


def _expected_micros(usage: dict, tool_usage: dict) -> int:
    """The published gpt-image-2 prices applied by hand to what the fake reported, and the stand-in rate for the
    conversational model (it has no built-in price): text in $5, cached $1.25, out $30; image tool text in $5,
    image in $8, image out $30 (per million tokens), each part rounded up to a micro-dollar."""
    cached = usage["input_tokens_details"]["cached_tokens"]
    chat = (Decimal(5) * (usage["input_tokens"] - cached) + Decimal("1.25") * cached
            + Decimal(30) * usage["output_tokens"]) / PER_MILLION
    gen = tool_usage["image_gen"]
    details = gen["input_tokens_details"]
    image = (Decimal(5) * details["text_tokens"] + Decimal(8) * details["image_tokens"]
             + Decimal(30) * gen["output_tokens"]) / PER_MILLION
    return sum(-int(-(part * PER_MILLION) // 1) for part in (chat, image))


async def test_each_images_cost_is_recorded_exactly_and_shown(easel: Running) -> None:
    ts, _ = await easel.sender.mention("a harbour at dawn [[two]]")
    await easel.jobs_settled(1)
    rows = list(await easel.store.generations.all())
    assert [r["status"] for r in rows] == ["posted", "posted"]
    first, second = rows
    expected = _expected_micros(first["usage"], first["tool_usage"])
    assert first["cost_micros"] == expected and isinstance(first["cost_micros"], int)
    assert first["cost_unpriced"] is True  # the conversational model has no price of its own
    assert second["cost_micros"] is None  # one response, one cost: on its first row only
    comments = [f["initial_comment"] for f in easel.slack.shared_files]
    dollars = Decimal(expected) / PER_MILLION
    shown = f"≈ ${dollars.quantize(Decimal('0.001'), rounding='ROUND_CEILING')}"
    assert shown in comments[0] and "≈ $" not in comments[1]


async def test_a_priced_conversational_model_is_not_flagged(easel_factory) -> None:
    easel = await easel_factory(PRICES='{"gpt-5.4": {"text_in": 2.5, "cached_in": 0.25, "text_out": 15}}')
    await easel.sender.mention("a lighthouse")
    await easel.jobs_settled(1)
    [row] = list(await easel.store.generations.all())
    assert row["cost_unpriced"] is False
    assert 0 < row["cost_micros"] < _expected_micros(row["usage"], row["tool_usage"])  # cheaper than the stand-in
