"""What each model takes at OpenAI, as the fake OpenAI enforces it: its per-model refusals, with OpenAI's error
shapes, and the model list (`GET /v1/models`) with shutdown dates.

Kept apart from the fake's generic request checks (tests/fakes/openai_api.py): this is the line-up as of
2026-12-01 (OpenAI's deprecations page and model pages), not the published specification. It is written
independently of Easel's own table (bot/image_models.py), so a mistake in one is caught by the other.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

BASE_QUALITIES = frozenset({"low", "medium", "high", "auto"})
PLUS_QUALITIES = BASE_QUALITIES | {"xhigh", "max"}
FIXED_SIZES = frozenset({"1024x1024", "1024x1536", "1536x1024", "auto"})
REPLACEMENT = "gpt-image-2.6-sunburst"


@dataclasses.dataclass(frozen=True)
class FakeModel:
    qualities: frozenset[str] = BASE_QUALITIES
    transparent: bool = True
    flexible_sizes: bool = True
    input_fidelity: bool = False
    complexity: bool = False


_TWO = FakeModel(transparent=False)
_TWO_FIVE = FakeModel(qualities=PLUS_QUALITIES)
_TWO_SIX = FakeModel(qualities=PLUS_QUALITIES, complexity=True)
_ONE = FakeModel(flexible_sizes=False, input_fidelity=True)

IMAGE_MODELS: dict[str, FakeModel] = {
    "gpt-image-2": _TWO,
    "gpt-image-2-2026-04-21": _TWO,
    "gpt-image-2.5-flare": _TWO_FIVE,
    "gpt-image-2.5-flare-2026-09-08": _TWO_FIVE,
    "gpt-image-2.5-sunburst": _TWO_FIVE,
    "gpt-image-2.5-sunburst-2026-09-08": _TWO_FIVE,
    "gpt-image-2.6-flare": _TWO_SIX,
    "gpt-image-2.6-sunburst": _TWO_SIX,
    "gpt-image-1.5": _ONE,
    "gpt-image-1.5-2025-12-16": _ONE,
    "gpt-image-1-mini": _ONE,
    "chatgpt-image-latest": _ONE,
    "gpt-image-1": _ONE,
}

# GET /v1/models as of 2026-12-01: id -> shutdown date (None: none announced). Models past their date are
# still listed, with it.
LISTING: dict[str, str | None] = {
    **{name: None for name in IMAGE_MODELS},
    "gpt-image-1": "2026-10-23",
    "gpt-image-1.5": "2026-12-01",
    "gpt-image-1.5-2025-12-16": "2026-12-01",
    "gpt-image-1-mini": "2026-12-01",
    "chatgpt-image-latest": "2026-12-01",
    "gpt-5.5": None,
    "gpt-5.4": None,
    "gpt-5.2": None,
    "gpt-5.5-pro": None,
    "gpt-5": "2026-12-11",
    "gpt-5-mini": "2026-12-11",
    "gpt-5-nano": "2026-12-11",
    "o3": "2026-12-11",
    "text-embedding-3-large": None,
}
REPLACEMENTS = {"gpt-5": "gpt-5.5", "gpt-5-mini": "gpt-5.4-mini", "gpt-5-nano": "gpt-5.4-nano", "o3": "gpt-5.5"}

Refusal = tuple[int, str, str | None, str | None]  # status, message, param, code


def listing_body(listing: Mapping[str, str | None], *, created: int = 1_767_225_600) -> dict[str, Any]:
    """The JSON of `GET /v1/models` (the SDK's `Model`: id, object, created, owned_by, shutdown_date)."""
    data = [{"id": name, "object": "model", "created": created, "owned_by": "system", "shutdown_date": date}
            for name, date in listing.items()]
    return {"object": "list", "data": data}


def _shut_down(model: str, listing: Mapping[str, str | None], today: datetime.date, param: str) -> Refusal | None:
    date = listing.get(model)
    if not date or datetime.date.fromisoformat(date) > today:
        return None
    instead = REPLACEMENTS.get(model, REPLACEMENT)
    return (400, f"The model `{model}` has been deprecated and was shut down on {date}. Use `{instead}` instead.",
            param, "model_not_found")


def chat_refusal(model: str, listing: Mapping[str, str | None], today: datetime.date) -> Refusal | None:
    """The request's own `model` (the conversational one), if it is shut down."""
    return _shut_down(model, listing, today, "model")


def tool_refusal(index: int, tool: Mapping[str, Any], listing: Mapping[str, str | None],
                 today: datetime.date) -> Refusal | None:
    """What OpenAI answers an `image_generation` tool its model does not take (None: nothing to refuse here;
    an unknown model is the fake's own check)."""
    name = tool.get("model")
    where = f"tools[{index}]"
    if not isinstance(name, str) or name not in IMAGE_MODELS:
        return None
    gone = _shut_down(name, listing, today, f"{where}.model")
    if gone:
        return gone
    model = IMAGE_MODELS[name]
    quality = tool.get("quality")
    if quality is not None and quality not in model.qualities:
        allowed = ", ".join(f"'{q}'" for q in sorted(model.qualities))
        return (400, f"Invalid value: '{quality}'. Supported values are: {allowed}.", f"{where}.quality",
                "invalid_value")
    if tool.get("background") == "transparent" and not model.transparent:
        return 400, "Transparent background is not supported for this model.", f"{where}.background", None
    if tool.get("input_fidelity") is not None and not model.input_fidelity:
        return (400, f"Input fidelity is not supported for model '{name}'.", f"{where}.input_fidelity",
                "invalid_input_fidelity_model")
    if "complexity" in tool and not model.complexity:
        return 400, f"Unknown parameter: '{where}.complexity'.", f"{where}.complexity", "unknown_parameter"
    size = tool.get("size")
    if isinstance(size, str) and not model.flexible_sizes and size not in FIXED_SIZES:
        return (400, f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', "
                "and 'auto'.", f"{where}.size", "invalid_value")
    return None
