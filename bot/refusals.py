"""What a refusal from OpenAI teaches, and what Easel does about it (pure code).

A 400 because the model does not take a parameter (a transparent background on gpt-image-2, `input_fidelity`
where it is not supported, a quality or size it does not know, `complexity`), or because the model is shut
down, is not a failure to report as such: the model's lack is recorded (see `bot.lifecycle`), and the request
is tried once more where it can work: on an active model that has the capability (telling the user), or
without the parameter if it was only a default. Where neither works (the person chose both the model and
the value), the user is told plainly what is not possible and what is. Such 400s are not billed, and the
retry happens at most once, so nothing is paid for twice.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from bot import image_models, messages, options

_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")


@dataclasses.dataclass(frozen=True)
class Refusal:
    """`capability`: what the model lacks, as `image_models.ModelTable.lack` records it ("shut_down" for a model
    OpenAI has shut down, with its `date`); `field`: the option it concerns."""

    model: str
    capability: str
    field: str
    date: str | None = None


def read(
    *, code: str | None, param: str | None, message: str | None, tool: dict[str, Any], chat_model: str
) -> Refusal | None:
    """The refusal in a 400's code, param and message (OpenAI's words are read here, never shown), or None
    if it is not about a parameter the model does not take. `chat_model` is the conversational model sent."""
    code, param, text = code or "", param or "", (message or "").lower()
    model = str(tool.get("model") or "")
    if code == "model_not_found" and "shut down" in text:
        found = _DATE.search(message or "")
        date = found.group(1) if found else None
        if param == "model":
            return Refusal(chat_model, "shut_down", "chat", date)
        return Refusal(model, "shut_down", "model", date) if model else None
    if not model:
        return None
    if "transparent background is not supported" in text or (
            param.endswith(".background") and tool.get("background") == "transparent" and "format" not in text):
        return Refusal(model, image_models.TRANSPARENT, "background")
    if code == "invalid_input_fidelity_model" or param.endswith(".input_fidelity"):
        return Refusal(model, image_models.INPUT_FIDELITY, "fidelity")
    if param.endswith(".complexity"):
        return Refusal(model, image_models.COMPLEXITY, "complexity")
    if param.endswith(".quality") and tool.get("quality"):
        return Refusal(model, f"quality:{tool['quality']}", "quality")
    if param.endswith(".size") and tool.get("size") not in (None, "auto", *image_models.FIXED_SIZES):
        return Refusal(model, image_models.FLEXIBLE_SIZES, "size")
    return None


def _what(field: str, tool: dict[str, Any]) -> str:
    if field == "background":
        return "a transparent background"
    if field in ("complexity", "fidelity"):
        return f"`--{field}`"
    return f"`--{field} {tool.get(field)}`"


def adapt(
    refusal: Refusal, *, tool: dict[str, Any], chosen: list[str] | tuple[str, ...], table: image_models.ModelTable
) -> tuple[dict[str, Any], str]:
    """The request to try once more (its tool, and the notice that says why it changed), given that `table`
    has learned `refusal` already. Raises options.OptionError with Easel's account of what is not possible
    and what is (for the user)."""
    if refusal.capability == "shut_down":
        resolved = options.recheck(tool, chosen, table=table)
        return resolved.tool(), resolved.replaced or ""
    if refusal.field not in chosen and refusal.field != "background":  # only a default: left out
        resolved = options.recheck(tool, chosen, table=table)
        return resolved.tool(), messages.dropped_default(refusal.model, _what(refusal.field, tool))
    resolved = options.recheck(tool, chosen, table=table, switch_for=options.CHECKED)
    if resolved.model == refusal.model:  # cannot happen once the lack is learned; never resend the same
        raise options.OptionError(f"{refusal.model} does not take {_what(refusal.field, tool)}.")
    return resolved.tool(), messages.retried_elsewhere(refusal.model, _what(refusal.field, tool), resolved.model)
