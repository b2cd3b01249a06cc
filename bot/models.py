"""The image models Easel knows, and what each can do.

This is the one place model names live. A model OpenAI ships later is added here, or without a release
through the `EXTRA_IMAGE_MODELS` setting (see `bot.config`), which merges into this table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

FIXED_SIZES = ("1024x1024", "1024x1536", "1536x1024")


@dataclasses.dataclass(frozen=True)
class ImageModel:
    """What one image model accepts through the `image_generation` tool."""

    name: str
    transparent: bool = True
    """Can it make a transparent background?"""
    flexible_sizes: bool = False
    """Any WxH with both sides divisible by 16, ratio at most 3:1, at most `max_pixels` (gpt-image-2 family);
    otherwise only `FIXED_SIZES` (and `auto`)."""
    max_edge: int = 3840
    max_pixels: int = 3840 * 2160
    input_fidelity: bool = False
    """Accepts the tool's `input_fidelity` field."""
    retired: str | None = None
    """The date OpenAI shut it down; a retired model is refused with that date."""


BUILTIN: tuple[ImageModel, ...] = (
    ImageModel(name="gpt-image-2", transparent=False, flexible_sizes=True),
    ImageModel(name="gpt-image-1.5", transparent=True, input_fidelity=True),
    ImageModel(name="gpt-image-1-mini", transparent=True),
    ImageModel(name="gpt-image-1", retired="2026-10-23"),
)


class ModelTable:
    """The capability table: built-in models plus those added by configuration, in preference order."""

    def __init__(self, models: tuple[ImageModel, ...] = BUILTIN, extra: Mapping[str, Mapping] | None = None):
        table = {m.name: m for m in models}
        for name, caps in (extra or {}).items():
            table[name] = ImageModel(name=name, **dict(caps))
        self._models = table

    def get(self, name: str) -> ImageModel | None:
        return self._models.get(name)

    def available(self) -> list[str]:
        return [m.name for m in self._models.values() if not m.retired]

    def transparent_fallback(self) -> ImageModel | None:
        """The first usable model that can draw a transparent background."""
        return next((m for m in self._models.values() if m.transparent and not m.retired), None)


def size_problem(model: ImageModel, size: str) -> str | None:
    """Why `size` does not suit `model`, or None when it does. `size` is already `auto` or `WxH`."""
    if size == "auto" or size in FIXED_SIZES:
        return None
    if not model.flexible_sizes:
        return f"{model.name} supports only {', '.join(FIXED_SIZES)} or auto"
    w, h = (int(v) for v in size.split("x"))
    if w < 16 or h < 16:
        return "both sides must be at least 16 pixels"
    if w % 16 or h % 16:
        return "both sides must be multiples of 16"
    if max(w, h) > model.max_edge or w * h > model.max_pixels:
        return f"{model.name} allows at most {model.max_edge} pixels a side and {model.max_pixels} in all"
    if max(w, h) > 3 * min(w, h):
        return "the long side may be at most 3 times the short side"
    return None
