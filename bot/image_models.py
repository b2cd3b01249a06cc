"""The models Easel knows, what each can do, and when OpenAI shuts it down.

This is the one place model names live. A model OpenAI ships later is added here, or without a release
through the `EXTRA_IMAGE_MODELS` setting (see `bot.config`), which merges into this table.

What OpenAI says at run time goes over the built-in data (`ModelTable.learn`): the shutdown dates that
`GET /v1/models` lists, and the capabilities a model turned out to lack when OpenAI refused a request for
them. A model is shut down from its shutdown date on (the date is UTC), and the table knows what day it is
through the `today` callable it is given.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

FIXED_SIZES = ("1024x1024", "1024x1536", "1536x1024")
QUALITIES = ("low", "medium", "high", "auto")
QUALITIES_PLUS = ("low", "medium", "high", "xhigh", "max", "auto")
COMPLEXITIES = ("low", "medium", "high")
FIDELITIES = ("high", "low")
FORMATS = ("png", "jpeg", "webp")
ENDING_SOON_DAYS = 14
"""A model this close to its shutdown date gets a one-line notice with its images."""

# Capabilities OpenAI can refuse, as recorded in `lacks` (quality values as "quality:<value>").
TRANSPARENT = "transparent"
INPUT_FIDELITY = "input_fidelity"
COMPLEXITY = "complexity"
FLEXIBLE_SIZES = "flexible_sizes"


def utc_today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


@dataclasses.dataclass(frozen=True)
class ImageModel:
    """What one image model accepts through the `image_generation` tool, and its end of life."""

    name: str
    qualities: tuple[str, ...] = QUALITIES
    transparent: bool = True
    """Can it make a transparent background?"""
    flexible_sizes: bool = False
    """Any WxH with both sides divisible by 16, ratio at most 3:1, at most `max_edge` a side and `max_pixels`
    in all (gpt-image-2 and later); otherwise only `FIXED_SIZES` (and `auto`)."""
    max_edge: int = 3840
    max_pixels: int = 3840 * 2160
    input_fidelity: tuple[str, ...] = ()
    """The values of the tool's `input_fidelity` it takes (none: the field is never sent)."""
    complexity: tuple[str, ...] = ()
    """The values of the tool's `complexity` it takes (none: the field is never sent)."""
    masks: bool = True
    """Takes an `input_image_mask`."""
    formats: tuple[str, ...] = FORMATS
    shutdown_date: str | None = None
    """YYYY-MM-DD: from this day on OpenAI refuses the model."""
    replacement: str | None = None
    """What OpenAI recommends instead, once it is shut down."""
    snapshot_of: str | None = None
    """A dated snapshot of another model: usable by name, not listed in the help."""

    def takes(self, field: str, value: Any) -> bool:
        """Does the model accept this value of this option (the names of `bot.options.ImageOptions`)?"""
        if field == "quality":
            return value in self.qualities
        if field == "background":
            return value != "transparent" or self.transparent
        if field == "complexity":
            return value in self.complexity
        if field == "fidelity":
            return value in self.input_fidelity
        if field == "format":
            return value in self.formats
        if field == "size":
            return size_problem(self, value) is None
        return True


@dataclasses.dataclass(frozen=True)
class ChatModel:
    """A conversational model (`OPENAI_MODEL`, the one that calls the image tool): only its end of life."""

    name: str
    shutdown_date: str | None = None
    replacement: str | None = None


_SHUT_2026_12_01 = {"shutdown_date": "2026-12-01", "replacement": "gpt-image-2.6-sunburst"}
_CURRENT = {"transparent": True, "flexible_sizes": True, "qualities": QUALITIES_PLUS}
_GPT_IMAGE_2 = {"transparent": False, "flexible_sizes": True}
_SIX = {**_CURRENT, "complexity": COMPLEXITIES, "formats": (*FORMATS, "gif", "svg")}

# In preference order: a request the default model cannot serve goes to the first active model that can.
BUILTIN: tuple[ImageModel, ...] = (
    ImageModel(name="gpt-image-2", **_GPT_IMAGE_2),
    ImageModel(name="gpt-image-2.5-flare", **_CURRENT),
    ImageModel(name="gpt-image-2.5-sunburst", **_CURRENT),
    ImageModel(name="gpt-image-2.6-flare", **_SIX),
    ImageModel(name="gpt-image-2.6-sunburst", **_SIX),
    ImageModel(name="gpt-image-2-2026-04-21", snapshot_of="gpt-image-2", **_GPT_IMAGE_2),
    ImageModel(name="gpt-image-2.5-flare-2026-09-08", snapshot_of="gpt-image-2.5-flare", **_CURRENT),
    ImageModel(name="gpt-image-2.5-sunburst-2026-09-08", snapshot_of="gpt-image-2.5-sunburst", **_CURRENT),
    ImageModel(name="gpt-image-1.5", input_fidelity=FIDELITIES, **_SHUT_2026_12_01),
    ImageModel(name="gpt-image-1.5-2025-12-16", input_fidelity=FIDELITIES, snapshot_of="gpt-image-1.5",
               **_SHUT_2026_12_01),
    ImageModel(name="gpt-image-1-mini", input_fidelity=("low",), **_SHUT_2026_12_01),
    ImageModel(name="chatgpt-image-latest", input_fidelity=FIDELITIES, **_SHUT_2026_12_01),
    ImageModel(name="gpt-image-1", input_fidelity=FIDELITIES, shutdown_date="2026-10-23",
               replacement="gpt-image-2.6-sunburst"),
)

CONVERSATIONAL: tuple[ChatModel, ...] = (
    ChatModel(name="gpt-5.5"),
    ChatModel(name="gpt-5.4"),
    ChatModel(name="gpt-5.2"),
    ChatModel(name="gpt-5", shutdown_date="2026-12-11", replacement="gpt-5.4"),
    ChatModel(name="gpt-5-mini", shutdown_date="2026-12-11", replacement="gpt-5.4"),
    ChatModel(name="gpt-5-nano", shutdown_date="2026-12-11", replacement="gpt-5.4"),
    ChatModel(name="o3", shutdown_date="2026-12-11", replacement="gpt-5.4"),
)


def _from_extra(name: str, caps: Mapping[str, Any]) -> ImageModel:
    """An `EXTRA_IMAGE_MODELS` entry as a model. Older spellings still work: `retired` is `shutdown_date`,
    and `input_fidelity`/`complexity` may be true (every value) or false."""
    values = {k: v for k, v in dict(caps).items() if v is not None}
    if "retired" in values:
        values.setdefault("shutdown_date", values.pop("retired"))
    for key, every in (("input_fidelity", FIDELITIES), ("complexity", COMPLEXITIES)):
        if isinstance(values.get(key), bool):
            values[key] = every if values[key] else ()
    for key in ("qualities", "input_fidelity", "complexity", "formats"):
        if key in values:
            values[key] = tuple(values[key])
    return ImageModel(name=name, **values)


def _date(value: str | None) -> datetime.date | None:
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        return None


class ModelTable:
    """The capability table, in preference order: built-in models, then those added by configuration, with
    what OpenAI has said about them since (see `learn`). Knows what day it is through `today`."""

    def __init__(
        self,
        models: tuple[ImageModel, ...] = BUILTIN,
        extra: Mapping[str, Mapping] | None = None,
        *,
        today: Callable[[], datetime.date] = utc_today,
        chat: tuple[ChatModel, ...] = CONVERSATIONAL,
        warn: bool = True,
    ):
        table = {m.name: m for m in models}
        for name, caps in (extra or {}).items():
            table[name] = _from_extra(name, caps)
        self._models = table
        self._chat = {m.name: m for m in chat}
        self.today = today
        self._listed: dict[str, str | None] = {}  # from GET /v1/models: name -> shutdown date (None: none announced)
        self._lacks: dict[str, frozenset[str]] = {}
        self._warned: set[str] = set()
        self._warn = warn  # False for a table that only checks configuration

    # -- what OpenAI says --------------------------------------------------------------------------------

    def learn(self, *, listed: Mapping[str, str | None], lacks: Mapping[str, Iterable[str]]) -> None:
        """Put what OpenAI has said over the built-in data, replacing what was learned before: `listed` the
        shutdown date of each model `GET /v1/models` lists (None: none announced), `lacks` the capabilities
        OpenAI refused per model."""
        self._listed = {k: v for k, v in listed.items() if v is None or _date(v) is not None}
        self._lacks = {k: frozenset(v) for k, v in lacks.items()}

    def lack(self, name: str, capability: str) -> None:
        """Record, in this process, that OpenAI refused `capability` for `name`."""
        self._lacks[name] = self._lacks.get(name, frozenset()) | {capability}

    def names(self) -> list[str]:
        """Every image and conversational model the table knows (what is worth learning about)."""
        return [*self._models, *self._chat]

    # -- image models ------------------------------------------------------------------------------------

    def get(self, name: str) -> ImageModel | None:
        """The model as things stand: its built-in or configured capabilities, less what OpenAI refused,
        with the shutdown date OpenAI lists."""
        model = self._models.get(name)
        if model is None:
            return None
        changes: dict[str, Any] = {}
        if name in self._listed:
            changes["shutdown_date"] = self._listed[name]
        lacks = self._lacks.get(name, frozenset())
        if lacks:
            changes["qualities"] = tuple(q for q in model.qualities if f"quality:{q}" not in lacks)
            if TRANSPARENT in lacks:
                changes["transparent"] = False
            if INPUT_FIDELITY in lacks:
                changes["input_fidelity"] = ()
            if COMPLEXITY in lacks:
                changes["complexity"] = ()
            if FLEXIBLE_SIZES in lacks:
                changes["flexible_sizes"] = False
        return dataclasses.replace(model, **changes) if changes else model

    def shutdown_date(self, name: str) -> str | None:
        if name in self._models:
            return self.get(name).shutdown_date  # type: ignore[union-attr]
        if name in self._listed:
            return self._listed[name]
        chat = self._chat.get(name)
        return chat.shutdown_date if chat else None

    def days_left(self, name: str) -> int | None:
        """Days until the model's shutdown date (0 or less: shut down), or None when none is known."""
        date = _date(self.shutdown_date(name))
        return None if date is None else (date - self.today()).days

    def is_shut_down(self, name: str) -> bool:
        left = self.days_left(name)
        return left is not None and left <= 0

    def ending_soon(self, name: str) -> bool:
        left = self.days_left(name)
        return left is not None and 0 < left <= ENDING_SOON_DAYS

    def _active(self) -> list[ImageModel]:
        return [m for m in (self.get(n) for n in self._models) if m is not None and not self.is_shut_down(m.name)]

    def available(self) -> list[str]:
        """Active models by name, in preference order (dated snapshots left out)."""
        return [m.name for m in self._active() if m.snapshot_of is None]

    def first_active(self, fits: Callable[[ImageModel], bool] = lambda m: True,
                     *, prefer: str | None = None) -> ImageModel | None:
        """The first active model that `fits` (`prefer` first, if it is active and fits); snapshots last."""
        candidates = sorted(self._active(), key=lambda m: m.snapshot_of is not None)
        if prefer is not None:
            candidates.sort(key=lambda m: m.name != prefer)
        return next((m for m in candidates if fits(m)), None)

    def replacement(self, name: str, fits: Callable[[ImageModel], bool] = lambda m: True) -> ImageModel | None:
        """What to use instead of a shut-down model: its replacement, else the next active model that fits."""
        model = self._models.get(name)
        return self.first_active(fits, prefer=model.replacement if model else None)

    def transparent_fallback(self) -> ImageModel | None:
        """The first usable model that can draw a transparent background."""
        return self.first_active(lambda m: m.transparent)

    def offering(self, field: str, value: Any) -> list[str]:
        """Active models (by name, no snapshots) that take this value of an option."""
        return [m.name for m in self._active() if m.snapshot_of is None and m.takes(field, value)]

    # -- conversational models ---------------------------------------------------------------------------

    def chat_model(self, name: str) -> str:
        """The conversational model to send instead of `name` if `name` is shut down (its replacement, or the
        first active one the table knows); `name` itself otherwise."""
        if not self.is_shut_down(name):
            return name
        known = self._chat.get(name)
        order = [known.replacement] if known and known.replacement else []
        order += list(self._chat)
        return next((n for n in order if not self.is_shut_down(n)), name)

    # -- saying it once ----------------------------------------------------------------------------------

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log a warning the first time this process meets `key` (a model being replaced, say)."""
        if self._warn and key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


def capabilities(model: ImageModel) -> dict[str, Any]:
    """A model's capabilities as plain data (for logs and the README's table)."""
    return {k: v for k, v in dataclasses.asdict(model).items() if k != "name"}


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


def takes_all(model: ImageModel, values: Mapping[str, Any], fields: Collection[str]) -> bool:
    """Does `model` take each of `values` named in `fields`?"""
    return all(model.takes(f, values[f]) for f in fields if f in values and values[f] is not None)
