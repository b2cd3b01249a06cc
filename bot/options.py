"""Image options: parsing `--flags` out of a prompt and resolving them against the model table. Pure code."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from typing import Any

from bot import image_models

QUALITIES = image_models.QUALITIES_PLUS  # what any model takes; each model's own values are in the table
FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
ACTIONS = ("auto", "generate", "edit")
COMPLEXITIES = image_models.COMPLEXITIES
FIDELITIES = image_models.FIDELITIES
SIZE_WORDS = {"square": "1024x1024", "portrait": "1024x1536", "landscape": "1536x1024"}
SWITCHES = ("web", "no-web")  # flags without a value
FLAGS = ("size", "quality", "format", "compression", "background", "model", "action", "complexity", "fidelity",
         *SWITCHES)
CHECKED = ("background", "quality", "complexity", "fidelity", "format", "size")
"""Options checked against the chosen model, in the order they are checked."""

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
    complexity: str | None = None
    fidelity: str | None = None
    web: bool | None = None

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
    complexity: str | None = None
    fidelity: str | None = None
    moderation: str = "auto"
    web: bool = False
    notices: tuple[str, ...] = ()
    replaced: str | None = None
    """The notice that the model asked for (or the default) is shut down and another draws instead."""
    chosen: tuple[str, ...] = ()
    """The options whose values the person chose (in this message or earlier in the thread), as opposed to
    defaults; "model" only if the request runs on the model they named."""

    def tool(self) -> dict[str, Any]:
        """The `image_generation` tool definition for the Responses API. `complexity` and `input_fidelity`
        are sent only when set, which resolving allows only for a model the table says takes them."""
        tool: dict[str, Any] = {
            "type": "image_generation",
            "model": self.model,
            "size": self.size,
            "quality": self.quality,
            "output_format": self.format,
            "background": self.background,
            "action": self.action,
            "moderation": self.moderation,
        }
        if self.compression is not None:
            tool["output_compression"] = self.compression
        if self.complexity is not None:
            tool["complexity"] = self.complexity
        if self.fidelity is not None:
            tool["input_fidelity"] = self.fidelity
        return tool

    def as_dict(self) -> dict[str, Any]:
        hidden = ("notices", "replaced", "chosen")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in hidden and v is not None}


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
    if flag == "complexity":
        return _choice(flag, value, COMPLEXITIES)
    if flag == "fidelity":
        return _choice(flag, value, FIDELITIES)
    return value  # model: checked against the table when resolving


def parse_size(value: str) -> str:
    """A size as `--size` takes it ("portrait", "1024x1536", "auto"), or OptionError."""
    return str(_value("size", value))


def parse(text: str) -> tuple[str, ImageOptions]:
    """Split `text` into the prompt and its flags. Raises OptionError naming the first bad flag."""
    found: dict[str, Any] = {}
    kept: list[str] = []
    pos = 0
    for m in _FLAG.finditer(text):
        flag = m.group(1).lower()
        value = m.group(2) if m.group(2) is not None else m.group(3)
        if flag not in FLAGS:
            raise OptionError(f"`--{flag}` is not an option. Options: {', '.join('--' + f for f in FLAGS)}.")
        end = m.end()
        if flag in SWITCHES:
            if m.group(2) is not None:
                raise OptionError(f"`--{flag}` takes no value: write `--{flag}` on its own.")
            if m.group(3) is not None:
                end = m.start(3)  # the word after a switch belongs to the prompt
            key, parsed = "web", flag == "web"
        else:
            if not value:
                raise OptionError(f"`--{flag}` needs a value, like `--{flag} {_EXAMPLES[flag]}`.")
            key, parsed = flag, _value(flag, value)
        if key in found:
            twice = "`--web` or `--no-web`" if key == "web" else f"`--{flag}`"
            raise OptionError(f"{twice} is given twice.")
        found[key] = parsed
        kept.append(text[pos : m.start()])
        pos = end
    kept.append(text[pos:])
    prompt = " ".join(" ".join(kept).split())
    return prompt, ImageOptions(**found)


_EXAMPLES = {
    "size": "1024x1536",
    "quality": "high",
    "format": "webp",
    "compression": "80",
    "background": "transparent",
    "model": "gpt-image-2.5-flare",
    "action": "edit",
    "complexity": "high",
    "fidelity": "high",
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
    action: str = "auto"
    complexity: str | None = None
    moderation: str = "auto"
    web: bool = False


_UNSET = {"quality": "auto", "size": "auto", "complexity": None, "fidelity": None, "format": "png",
          "background": "auto"}  # what a default that the model does not take becomes


def resolve(
    options: ImageOptions,
    *,
    defaults: Defaults,
    table: image_models.ModelTable,
    explicit: Collection[str] | None = None,
    switch_for: Collection[str] = ("background",),
) -> Resolved:
    """Apply defaults and the model's capabilities. Raises OptionError with a message for the user.

    `explicit` names the options given in this very request (None: all of `options`); the others in
    `options` came from the thread. A shut-down model named explicitly is refused with its date and
    replacement; one that comes from the thread or the defaults is replaced, with a notice.

    A value the model does not take is refused with the values it takes, or, when it was only a default,
    left out (`auto`, or not sent). A transparent background, and the options in `switch_for` when the
    person did not choose the model, move the request to the first active model that takes them all, with
    a notice."""
    given = options.as_dict()
    explicit = set(given) if explicit is None else set(explicit) & set(given)
    chosen = set(given)
    notices: list[str] = []
    replaced: list[str] = []
    name = options.model or defaults.model
    model = table.get(name)
    if model is None:
        raise OptionError(f"`{name}` is not an image model Easel knows. Use one of: {', '.join(table.available())}.")
    values: dict[str, Any] = {
        "size": options.size or defaults.size,
        "quality": options.quality or defaults.quality,
        "format": options.format or defaults.format,
        "background": options.background or defaults.background,
        "complexity": options.complexity or defaults.complexity,
        "fidelity": options.fidelity,
    }
    if values["background"] == "transparent" and values["format"] == "jpeg":
        raise OptionError("A transparent background needs `--format png` or `--format webp`; jpeg has no transparency.")
    if table.is_shut_down(name):
        model = _replace_shut_down(model, values, chosen, explicit, table, replaced)
    for _ in range(len(CHECKED) + 1):  # each pass either passes or moves to another model (at most once a field)
        field = next((f for f in CHECKED if values[f] is not None and not model.takes(f, values[f])), None)
        if field is None:
            break
        if field not in chosen and field != "background":  # only a default: leave it out
            values[field] = _UNSET[field]
            continue
        if field == "background" or (field in switch_for and "model" not in chosen):
            need = [f for f in CHECKED if f in chosen or f == field]
            other = table.first_active(
                lambda m, old=model.name, need=need: m.name != old and image_models.takes_all(m, values, need))
            if other is not None:
                notices.append(_switched(model.name, field, values[field], other.name))
                model = other
                chosen.discard("model")
                continue
        raise OptionError(_not_taken(model, field, values[field], table))
    fmt = values["format"]
    compression = options.compression if options.compression is not None else defaults.compression
    if compression is not None and fmt == "png":
        if options.compression is not None:
            raise OptionError("`--compression` applies to jpeg and webp only; png is always lossless.")
        compression = None
    return Resolved(
        model=model.name,
        size=values["size"],
        quality=values["quality"],
        format=fmt,
        background=values["background"],
        action=options.action or defaults.action,
        compression=compression,
        complexity=values["complexity"],
        fidelity=values["fidelity"],
        moderation=defaults.moderation,
        web=defaults.web if options.web is None else options.web,
        notices=tuple(notices),
        replaced=replaced[0] if replaced else None,
        chosen=tuple(sorted(chosen)),
    )


def _replace_shut_down(
    model: image_models.ImageModel, values: dict[str, Any], chosen: set[str], explicit: set[str],
    table: image_models.ModelTable, notices: list[str],
) -> image_models.ImageModel:
    date = table.shutdown_date(model.name)
    need = [f for f in CHECKED if f in chosen]
    new = (table.replacement(model.name, lambda m: image_models.takes_all(m, values, need))
           or table.replacement(model.name))
    if new is None:
        raise OptionError(f"{model.name} was shut down by OpenAI on {date}, and no other image model is available.")
    if "model" in explicit:
        raise OptionError(f"{model.name} was shut down by OpenAI on {date}. Use `--model {new.name}` instead "
                          f"(or one of: {', '.join(table.available())}).")
    table.warn_once(f"shut down:{model.name}", "image model %s was shut down by OpenAI on %s; using %s instead",
                    model.name, date, new.name)
    notices.append(f"{model.name} was shut down by OpenAI on {date}, so this is drawn with {new.name}.")
    chosen.discard("model")
    return new


def _what(field: str, value: Any) -> str:
    if field == "background":
        return "a transparent background"
    if field in ("complexity", "fidelity"):
        return f"`--{field}`"
    return f"`--{field} {value}`"


def _switched(old: str, field: str, value: Any, new: str) -> str:
    if field == "background":
        return f"{old} cannot make a transparent background, so this one is drawn with {new}."
    return f"{old} does not take {_what(field, value)}, so this one is drawn with {new}."


def _not_taken(model: image_models.ImageModel, field: str, value: Any, table: image_models.ModelTable) -> str:
    """Why `model` cannot serve this value, what it takes instead, and which models would."""
    others = [n for n in table.offering(field, value) if n != model.name]
    where = f" {_what(field, value)} works with {', '.join(others)}." if others else ""
    if field == "background":
        return f"{model.name} cannot make a transparent background, and no other image model here can."
    if field == "size":
        return f"`--size {value}` does not work here: {image_models.size_problem(model, value)}."
    if field == "quality":
        return f"`--quality {value}` does not work with {model.name}: it takes {', '.join(model.qualities)}.{where}"
    if field == "format":
        return f"{model.name} cannot make {value} images: it makes {', '.join(model.formats)}."
    takes = {"complexity": model.complexity, "fidelity": model.input_fidelity}[field]
    if not takes:
        return (f"{model.name} does not take `--{field}`; models that do: {', '.join(others)}." if others
                else f"{model.name} does not take `--{field}`, and no image model here does.")
    return f"`--{field} {value}` does not work with {model.name}: it takes {', '.join(takes)}.{where}"


def from_tool(tool: dict[str, Any], chosen: Collection[str]) -> tuple[ImageOptions, Defaults]:
    """A stored request's tool back as options: those in `chosen` as the person's, the rest as defaults."""
    values = {
        "model": tool.get("model"), "size": tool.get("size"), "quality": tool.get("quality"),
        "format": tool.get("output_format"), "compression": tool.get("output_compression"),
        "background": tool.get("background"), "action": tool.get("action"),
        "complexity": tool.get("complexity"), "fidelity": tool.get("input_fidelity"),
    }
    asked = ImageOptions(**{k: v for k, v in values.items() if k in chosen or k == "fidelity"})
    defaults = Defaults(**{k: v for k, v in values.items() if v is not None and k != "fidelity"},
                        moderation=str(tool.get("moderation") or "auto"))
    return asked, defaults


def recheck(
    tool: dict[str, Any], chosen: Collection[str], *, table: image_models.ModelTable,
    switch_for: Collection[str] = ("background",),
) -> Resolved:
    """Resolve a stored request's tool again against the table as it is now (a model shut down since the
    request was taken, a capability OpenAI has refused since). Raises OptionError."""
    asked, defaults = from_tool(tool, chosen)
    return resolve(asked, defaults=defaults, table=table, explicit=(), switch_for=switch_for)
