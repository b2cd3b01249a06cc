"""What a generation costs: one price table, the cost of what OpenAI reports, and the worst case before asking.

Amounts are exact: prices are `Decimal` dollars per million tokens, and costs are whole micro-dollars
(millionths of a dollar, `int`), rounded up, so a ledger of them adds up without floating-point drift and a
budget check never rounds a cost down to free.

The conversational model's tokens (`usage` of the response) are priced at its own row; the image tool's
(`tool_usage.image_gen`) at the image model's row. A model the table does not know is priced at the dearest
row of its kind and the cost is flagged `unpriced` (counted, never free by accident). `PRICES` (JSON, see
`bot.config`) changes or adds rows without a release.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

MILLION = Decimal(1_000_000)


@dataclasses.dataclass(frozen=True)
class Price:
    """Dollars per million tokens."""

    text_in: Decimal
    cached_in: Decimal
    text_out: Decimal
    image_in: Decimal = Decimal(0)
    image_out: Decimal = Decimal(0)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Price:
        return cls(**{k: Decimal(str(v)) for k, v in row.items()})


# The gpt-image-2 family's published prices (2026-12-01). Their text output is not published (an image model
# says little): it is priced as image output, so that it is never under-counted.
_IMAGE_2 = Price(text_in=Decimal("5"), cached_in=Decimal("1.25"), text_out=Decimal("30"), image_in=Decimal("8"),
                 image_out=Decimal("30"))
BUILTIN: dict[str, Price] = {
    "gpt-image-2": _IMAGE_2,
    "gpt-image-2.5-flare": _IMAGE_2,
    "gpt-image-2.5-sunburst": _IMAGE_2,
    "gpt-image-2.6-flare": _IMAGE_2,
    "gpt-image-2.6-sunburst": _IMAGE_2,
}
# No conversational model's price is built in (set it with PRICES). Until then its tokens are counted at this
# deliberately dear stand-in and the cost is flagged unpriced.
STAND_IN_CHAT = Price(text_in=Decimal("5"), cached_in=Decimal("1.25"), text_out=Decimal("30"))

# Output tokens of one image at 1024x1024, by quality (the worst case scales with the pixel count). gpt-image-2
# at low, medium and high costs about $0.006, $0.053 and $0.211 at 1024x1024; xhigh and max are bounded by
# twice and four times high; auto may mean high.
IMAGE_TOKENS_1024 = {"low": 208, "medium": 1768, "high": 7040, "auto": 7040, "xhigh": 14080, "max": 28160}
PREVIEW_TOKENS = 100  # each partial image
INPUT_IMAGE_TOKENS = 1600  # the most one attached image is counted as, in image input tokens
PROMPT_TOKENS = 4000  # the conversational model's turn at most (instructions, prompt, its answer, a chain)


@dataclasses.dataclass(frozen=True)
class Cost:
    micros: int
    unpriced: tuple[str, ...] = ()  # models priced by the fallback row

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.micros + other.micros, tuple(dict.fromkeys(self.unpriced + other.unpriced)))


class Prices:
    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None):
        self._rows = {**BUILTIN, **{name: Price.of(row) for name, row in (overrides or {}).items()}}
        image_rows = [p for p in self._rows.values() if p.image_out]
        chat_rows = [p for p in self._rows.values() if not p.image_out]
        self._dearest_image = max(image_rows or [_IMAGE_2], key=lambda p: (p.image_out, p.text_in))
        self._dearest_chat = max([*chat_rows, STAND_IN_CHAT], key=lambda p: (p.text_out, p.text_in))

    def row(self, model: str, *, image: bool) -> tuple[Price, bool]:
        """The model's prices, and whether they are its own (False: the dearest of its kind stands in)."""
        found = self._rows.get(model)
        if found is not None:
            return found, True
        return (self._dearest_image if image else self._dearest_chat), False

    def cost(self, *, chat_model: str, image_model: str | None, usage: Mapping[str, Any] | None,
             tool_usage: Mapping[str, Any] | None) -> Cost:
        """What one response cost, from what OpenAI reported for it."""
        total = Cost(0)
        if usage:
            price, known = self.row(chat_model, image=False)
            cached = _int((usage.get("input_tokens_details") or {}).get("cached_tokens"))
            dollars = (price.text_in * max(0, _int(usage.get("input_tokens")) - cached) + price.cached_in * cached
                       + price.text_out * _int(usage.get("output_tokens"))) / MILLION
            total += Cost(_micros(dollars), () if known else (chat_model,))
        image_gen = (tool_usage or {}).get("image_gen") if tool_usage else None
        if image_gen and image_model:
            price, known = self.row(image_model, image=True)
            details = image_gen.get("input_tokens_details") or {}
            image_in = _int(details.get("image_tokens"))
            text_in = _int(details.get("text_tokens")) if details else _int(image_gen.get("input_tokens"))
            out = image_gen.get("output_tokens_details") or {}
            image_out = _int(out.get("image_tokens")) if out else _int(image_gen.get("output_tokens"))
            text_out = _int(out.get("text_tokens")) if out else 0
            dollars = (price.text_in * text_in + price.image_in * image_in + price.image_out * image_out
                       + price.text_out * text_out) / MILLION
            total += Cost(_micros(dollars), () if known else (image_model,))
        return total

    def worst_case(self, *, chat_model: str, image_model: str, quality: str, size: str, images: int = 1,
                   previews: int = 0, input_images: int = 0) -> int:
        """The most one request can cost, in micro-dollars, before it is sent (for budgets and confirmation)."""
        chat, _ = self.row(chat_model, image=False)
        image, _ = self.row(image_model, image=True)
        per_image = IMAGE_TOKENS_1024.get(quality, IMAGE_TOKENS_1024["max"]) * _pixels(size) / (1024 * 1024)
        out_tokens = images * (math.ceil(per_image) + previews * PREVIEW_TOKENS)
        dollars = (chat.text_in * PROMPT_TOKENS + chat.text_out * PROMPT_TOKENS
                   + image.text_in * PROMPT_TOKENS + image.image_in * INPUT_IMAGE_TOKENS * input_images
                   + image.image_out * out_tokens) / MILLION
        return _micros(dollars)


def shown(micros: int) -> str:
    """"≈ $0.042": to a tenth of a cent below a dollar, to the cent above."""
    dollars = Decimal(micros) / MILLION
    if dollars < 1:
        return f"≈ ${dollars.quantize(Decimal('0.001'), rounding=ROUND_CEILING)}"
    return f"≈ ${dollars.quantize(Decimal('0.01'), rounding=ROUND_CEILING)}"


def _micros(dollars: Decimal) -> int:
    return int((dollars * MILLION).to_integral_value(rounding=ROUND_CEILING))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _pixels(size: str) -> int:
    """`auto` is priced as the largest fixed size it may pick."""
    if size == "auto":
        return 1536 * 1024
    w, _, h = size.partition("x")
    return int(w) * int(h) if w.isdigit() and h.isdigit() else 3840 * 2160
