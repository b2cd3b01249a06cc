"""Image options: parsing `--flags` out of a prompt and resolving them against the model table. Pure code."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from bot import models

QUALITIES = ("low", "medium", "high", "auto")
FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
ACTIONS = ("auto", "generate", "edit")
SIZE_WORDS = {"square": "1024x1024", "portrait": "1024x1536", "landscape": "1536x1024"}
FLAGS = ("size", "quality", "format", "compression", "background", "model", "action")

# `--flag value` or `--flag=value`. Slack clients often turn "--" into an em or en dash, so accept those too.
_FLAG = re.compile(r"(?:(?<=\s)|^)(?:--|—|–)([A-Za-z][\w-]*)(?:=(\S*)|[ \t]+(?!--|—|–)(\S+))?")
_SIZE = re.compile(r"^(\d{1,5})\s*[x×X]\s*(\d{1,5})$")


class OptionError(ValueError):
    """A flag or value Easel cannot use; the message is shown to the user as it is."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """What the user asked for; None means "use the default"."""

    size: str | None = None
    quality: str | None = None
    format: str | None = None
    compression: int | None = None
    background: str | None = None
    model: str | None = None
    action: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Options with defaults applied and checked against the model's capabilities."""

    model: str
    size: str
    quality: str
    format: str
    background: str
    action: str
    compression: int | None = None
    notices: tuple[str, ...] = ()

    def tool(self) -> dict[str, Any]:
        """The `image_generation` tool definition for the Responses API."""
        tool: dict[str, Any] = {
            "type": "image_generation",
            "model": self.model,
            "size": self.size,
            "quality": self.quality,
            "output_format": self.format,
            "background": self.background,
            "action": self.action,
        }
        if self.compression is not None:
            tool["output_compression"] = self.compression
        return tool

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "notices" and v is not None}


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    v = value.lower()
    if v not in allowed:
        raise OptionError(f"`--{flag} {value}` is not allowed. Use one of: {', '.join(allowed)}.")
    return v


def _value(flag: str, value: str) -> str | int:
    if flag == "size":
        v = SIZE_WORDS.get(value.lower(), value.lower())
        if v == "auto":
            return v
        m = _SIZE.match(v)
        if not m:
            raise OptionError(
                f"`--size {value}` is not a size. Use WIDTHxHEIGHT (like 1024x1536), auto, "
                f"or {', '.join(SIZE_WORDS)}."
            )
        return f"{int(m.group(1))}x{int(m.group(2))}"
    if flag == "quality":
        return _choice(flag, value, QUALITIES)
    if flag == "format":
        return _choice(flag, "jpeg" if value.lower() == "jpg" else value, FORMATS)
    if flag == "compression":
        if not re.fullmatch(r"\d{1,3}", value) or int(value) > 100:
            raise OptionError(f"`--compression {value}` must be a whole number from 0 to 100.")
        return int(value)
    if flag == "background":
        return _choice(flag, value, BACKGROUNDS)
    if flag == "action":
        return _choice(flag, value, ACTIONS)
    return value  # model: checked against the table when resolving


def parse(text: str) -> tuple[str, ImageOptions]:
    """Split `text` into the prompt and its flags. Raises OptionError naming the first bad flag."""
    found: dict[str, Any] = {}
    for m in _FLAG.finditer(text):
        flag = m.group(1).lower()
        value = m.group(2) if m.group(2) is not None else m.group(3)
        if flag not in FLAGS:
            raise OptionError(f"`--{flag}` is not an option. Options: {', '.join('--' + f for f in FLAGS)}.")
        if not value:
            raise OptionError(f"`--{flag}` needs a value, like `--{flag} {_EXAMPLES[flag]}`.")
        if flag in found:
            raise OptionError(f"`--{flag}` is given twice.")
        found[flag] = _value(flag, value)
    prompt = " ".join(_FLAG.sub(" ", text).split())
    return prompt, ImageOptions(**found)


_EXAMPLES = {
    "size": "1024x1536",
    "quality": "high",
    "format": "webp",
    "compression": "80",
    "background": "transparent",
    "model": "gpt-image-1.5",
    "action": "edit",
}


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Defaults from configuration."""

    model: str = "gpt-image-2"
    size: str = "auto"
    quality: str = "auto"
    format: str = "png"
    background: str = "auto"
    compression: int | None = None


def resolve(options: ImageOptions, *, defaults: Defaults, table: models.ModelTable) -> Resolved:
    """Apply defaults and the model's capabilities. Raises OptionError with a message for the user."""
    name = options.model or defaults.model
    model = table.get(name)
    if model is None:
        raise OptionError(f"`{name}` is not an image model Easel knows. Use one of: {', '.join(table.available())}.")
    if model.retired:
        raise OptionError(
            f"{name} was retired by OpenAI on {model.retired}. Use one of: {', '.join(table.available())}."
        )
    fmt = options.format or defaults.format
    background = options.background or defaults.background
    notices: list[str] = []
    if background == "transparent":
        if fmt == "jpeg":
            raise OptionError(
                "A transparent background needs `--format png` or `--format webp`; jpeg has no transparency."
            )
        if not model.transparent:
            fallback = table.transparent_fallback()
            if fallback is None:
                raise OptionError(f"{name} cannot make a transparent background, and no configured model can.")
            notices.append(f"{name} cannot make a transparent background, so this one is drawn with {fallback.name}.")
            model = fallback
    compression = options.compression if options.compression is not None else defaults.compression
    if compression is not None and fmt == "png":
        if options.compression is not None:
            raise OptionError("`--compression` applies to jpeg and webp only; png is always lossless.")
        compression = None
    size = options.size or defaults.size
    problem = models.size_problem(model, size)
    if problem:
        raise OptionError(f"`--size {size}` does not work here: {problem}.")
    return Resolved(
        model=model.name,
        size=size,
        quality=options.quality or defaults.quality,
        format=fmt,
        background=background,
        action=options.action or "auto",
        compression=compression,
        notices=tuple(notices),
    )
