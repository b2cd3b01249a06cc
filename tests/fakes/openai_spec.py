"""OpenAI's published OpenAPI spec (specs/openai-responses.json), as the fake OpenAI applies it.

`check_create(body)` says what OpenAI would refuse in a `POST /v1/responses` body, with the `param` and `code`
its 400 would carry: the body against `CreateResponse`, each `image_generation` tool against `ImageGenTool`
(refs resolved against `components.schemas`), then the rules the spec states only in prose (sizes). It knows
nothing of models: what one model cannot do is another module's concern.

`validate(name, value)` lists where a value (a Response, a stream event) breaks the schema `name`, for the
tests that hold the fake's own answers to the spec.

The spec (2026-08-21) is older than the SDK and today's API; `KNOWN_GAPS` is what they accept that it lacks,
allowed here explicitly. OpenAPI's `oneOf` is read as `anyOf`: the spec's unions overlap (a user message
matches both `EasyInputMessage` and `InputMessage`), and the API takes a body that matches any branch.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
import reprlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).with_name("specs") / "openai-responses.json"
_URI = "urn:openai-responses"

# What the SDK (3.5x) and today's API accept that the 2026-08-21 spec lacks. Image models are any string in the
# spec already (gpt-image-2.5-*, gpt-image-2.6-* pass as such).
KNOWN_GAPS: dict[str, Any] = {
    "image_generation tool": {
        "quality": ["xhigh", "max"],  # gpt-image-2.5 flare/sunburst (2026-09-08)
        "output_format": ["gif", "svg"],  # gpt-image-2.6 (2026-11-04)
        "properties": {
            "complexity": {"type": "string", "enum": ["low", "medium", "high"]},
            "frame_count": {"type": "integer", "minimum": 1},
            "frame_duration_ms": {"type": "integer", "minimum": 1},
            "svg": {"type": "object"},
        },
    },
    "create body": {
        "properties": {
            "image": {"type": "object", "properties": {"context_compression": {
                "type": "string", "enum": ["auto", "enabled", "disabled"]}}, "additionalProperties": False},
            "stream_options": {"type": "object"},
            "safety_identifier": {"type": "string", "maxLength": 64},
            "prompt_cache_key": {"type": "string"},
        },
    },
    "image_generation_call item": ["revised_prompt", "action", "background", "output_format", "quality", "size",
                                   "error", "svg_usage"],
    "response": {"nullable": ["user", "usage"]},  # sent as null by the live API, not nullable in the spec
    "input_image": {"optional": ["detail"]},  # required in the spec; the API takes it as "auto" when left out
}

# Prose rules the schemas do not carry. Sizes (ImageGenTool.size's description): sides multiples of 16, aspect
# ratio within 1:3..3:1, at most 3840 a side and 3840x2160 in all. Metadata (Metadata's description): at most
# 16 pairs, keys of at most 64 characters, values of at most 512. An input image's image_url: at most
# 20,971,520 characters (the cap the spec gives input_image elsewhere, e.g. in tool outputs).
MAX_METADATA = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_IMAGE_URL = 20_971_520
MAX_EDGE = 3840
MAX_PIXELS = 3840 * 2160
_SIZE = re.compile(r"(\d+)x(\d+)")
_FIXED_SIZES = ("1024x1024", "1024x1536", "1536x1024", "auto")


@dataclasses.dataclass(frozen=True)
class Refusal:
    """What OpenAI's 400 would say: `{"error": {"message", "type", "param", "code"}}`."""

    message: str
    param: str | None
    code: str | None
    type: str = "invalid_request_error"


def check_create(body: Any) -> Refusal | None:
    """What OpenAI would refuse in this `POST /v1/responses` body, or None."""
    if not isinstance(body, dict):
        return Refusal("We could not parse the JSON body of your request.", None, None)
    known = _create_properties()
    for key in body:
        if key not in known:
            return Refusal(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    tools = body.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("type") == "image_generation":
                found = _first(_validator("ImageGenTool"), tool, f"tools[{index}]") or _size_rule(tool, index)
                if found is not None:
                    return found
    return _first(_validator("CreateResponse"), body, "") or _metadata_rule(body.get("metadata")) or \
        _image_url_rule(body.get("input"))


def _metadata_rule(metadata: Any) -> Refusal | None:
    if not isinstance(metadata, dict):
        return None
    if len(metadata) > MAX_METADATA:
        return Refusal(f"Invalid 'metadata': too many properties. Expected an object with at most {MAX_METADATA} "
                       f"properties, but got an object with {len(metadata)} properties instead.", "metadata",
                       "object_above_max_properties")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            return Refusal(f"Invalid 'metadata': string too long. Expected a key of at most {MAX_METADATA_KEY} "
                           f"characters, but got one of {len(key)} instead.", "metadata", "string_above_max_length")
        if isinstance(value, str) and len(value) > MAX_METADATA_VALUE:
            return Refusal(f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                           f"{MAX_METADATA_VALUE}, but got a string with length {len(value)} instead.",
                           f"metadata.{key}", "string_above_max_length")
    return None


def _image_url_rule(items: Any) -> Refusal | None:
    for i, item in enumerate(items if isinstance(items, list) else []):
        content = item.get("content") if isinstance(item, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            url = part.get("image_url") if isinstance(part, dict) and part.get("type") == "input_image" else None
            if isinstance(url, str) and len(url) > MAX_IMAGE_URL:
                return Refusal(f"Invalid 'input[{i}].content[{j}].image_url': string too long. Expected a string "
                               f"with maximum length {MAX_IMAGE_URL}, but got a string with length {len(url)} "
                               "instead.", f"input[{i}].content[{j}].image_url", "string_above_max_length")
    return None


def validate(name: str, value: Any) -> list[str]:
    """Where `value` breaks the spec's schema `name` (with the known gaps allowed); empty if nowhere."""
    return [f"{_param(e.absolute_path, '') or '(top)'}: {e.message[:300]}"
            for e in _validator(name).iter_errors(value)]


def _size_rule(tool: dict[str, Any], index: int) -> Refusal | None:
    size = tool.get("size")
    if not isinstance(size, str) or size in _FIXED_SIZES:
        return None
    found = _SIZE.fullmatch(size)
    problem = None
    if found is None:
        problem = "Supported values are 'WIDTHxHEIGHT' (such as '1536x864'), '1024x1024', '1024x1536', " \
                  "'1536x1024' and 'auto'."
    else:
        width, height = int(found.group(1)), int(found.group(2))
        if width % 16 or height % 16 or not width or not height:
            problem = "Width and height must both be multiples of 16."
        elif max(width, height) > 3 * min(width, height):
            problem = "The aspect ratio must be between 1:3 and 3:1."
        elif max(width, height) > MAX_EDGE or width * height > MAX_PIXELS:
            problem = f"The maximum supported resolution is {MAX_EDGE}x2160."
    if problem is None:
        return None
    return Refusal(f"Invalid value: '{size}'. {problem}", f"tools[{index}].size", "invalid_value")


def _first(validator: Any, value: Any, base: str) -> Refusal | None:
    errors = list(validator.iter_errors(value))
    if not errors:
        return None
    error = _deepest(jsonschema.exceptions.best_match(errors))
    return _refusal(error, base)


def _deepest(error: ValidationError) -> ValidationError:
    """Inside an anyOf, the error of the branch the value was meant for (not one refusing its `type`, which
    says only that it is another kind of item), about the deepest field."""
    while error.context:
        meant = [e for e in error.context if not _other_kind(e)] or list(error.context)
        error = max(meant, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def _other_kind(error: ValidationError) -> bool:
    path = list(error.relative_path)
    return error.validator in ("enum", "const") and path[-1:] == ["type"]


def _refusal(error: ValidationError, base: str) -> Refusal:
    param = _param(error.absolute_path, base) or None
    name = param or "body"
    value = error.instance
    kind = error.validator
    if kind == "additionalProperties":
        extra = sorted(set(value) - set(error.schema.get("properties", {})))
        where = f"{param}.{extra[0]}" if param else extra[0]
        return Refusal(f"Unknown parameter: '{where}'.", where, "unknown_parameter")
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        where = f"{param}.{missing[0]}" if param and missing else (missing[0] if missing else param)
        return Refusal(f"Missing required parameter: '{where}'.", where, "missing_required_parameter")
    if kind == "enum":
        allowed = ", ".join(f"'{v}'" for v in error.validator_value)
        return Refusal(f"Invalid value: {_show(value)}. Supported values are: {allowed}.", param, "invalid_value")
    if kind == "maximum":
        return Refusal(f"Invalid '{name}': integer above maximum value. Expected a value <= "
                       f"{error.validator_value}, but got {value} instead.", param, "integer_above_max_value")
    if kind == "minimum":
        return Refusal(f"Invalid '{name}': integer below minimum value. Expected a value >= "
                       f"{error.validator_value}, but got {value} instead.", param, "integer_below_min_value")
    if kind == "maxLength":
        return Refusal(f"Invalid '{name}': string too long. Expected a string with maximum length "
                       f"{error.validator_value}, but got a string with length {len(value)} instead.", param,
                       "string_above_max_length")
    if kind == "maxProperties":
        return Refusal(f"Invalid '{name}': too many properties. Expected an object with at most "
                       f"{error.validator_value} properties.", param, "object_above_max_properties")
    if kind in ("type", "const"):
        return Refusal(f"Invalid type for '{name}': expected {_expected(error)}, but got {_kind(value)} instead.",
                       param, "invalid_type")
    return Refusal(f"Invalid value for '{name}'.", param, "invalid_value")


def _param(path: Any, base: str) -> str:
    out = base
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else json.dumps(value)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _expected(error: ValidationError) -> str:
    if error.validator == "const":
        return _show(error.validator_value)
    wanted = error.validator_value
    return " or ".join(wanted) if isinstance(wanted, list) else str(wanted)


# -- the schemas, loaded once -------------------------------------------------------------------------------


# jsonschema's own keywords put the value's repr in every error, and a union's branches that refuse a body make
# many: with an image's base64 in it, megabytes each. These say the same with a short repr.
_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 80


def _any_of(validator: Any, any_of: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    errors: list[ValidationError] = []
    for index, subschema in enumerate(any_of):
        found = list(validator.descend(instance, subschema, schema_path=index))
        if not found:
            return
        errors.extend(found)
    yield ValidationError(f"{_BRIEF.repr(instance)} is not valid under any of the given schemas", context=errors)


def _type(validator: Any, types: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    types = types if isinstance(types, list) else [types]
    if not any(validator.is_type(instance, kind) for kind in types):
        yield ValidationError(f"{_BRIEF.repr(instance)} is not of type {', '.join(map(repr, types))}")


def _enum(validator: Any, enums: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not any(_same(each, instance) for each in enums):
        yield ValidationError(f"{_BRIEF.repr(instance)} is not one of {enums!r}")


def _const(validator: Any, const: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not _same(const, instance):
        yield ValidationError(f"{const!r} was expected")


def _same(a: Any, b: Any) -> bool:
    """JSON equality (True is not 1)."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


_Validator = validators.extend(validators.Draft202012Validator, {
    "oneOf": _any_of, "anyOf": _any_of, "type": _type, "enum": _enum, "const": _const})


@functools.cache
def _loaded() -> dict[str, Any]:
    """The spec, with `KNOWN_GAPS` written into it."""
    spec = json.loads(SPEC.read_text())
    schemas = spec["components"]["schemas"]
    tool = schemas["ImageGenTool"]
    gaps = KNOWN_GAPS["image_generation tool"]
    tool["properties"]["quality"]["enum"] += gaps["quality"]
    tool["properties"]["output_format"]["enum"] += gaps["output_format"]
    tool["properties"].update(gaps["properties"])
    tool["additionalProperties"] = False  # the API refuses fields it does not know
    call = schemas["ImageGenToolCall"]
    for name in KNOWN_GAPS["image_generation_call item"]:
        call["properties"].setdefault(name, {})
    schemas["CreateResponse"]["allOf"].append(
        {"type": "object", "properties": copy.deepcopy(KNOWN_GAPS["create body"]["properties"])})
    _allow_null(schemas, schemas["Response"], KNOWN_GAPS["response"]["nullable"])
    image = schemas["InputImageContent"]
    image["required"] = [r for r in image.get("required", []) if r not in KNOWN_GAPS["input_image"]["optional"]]
    return spec


def _allow_null(schemas: dict[str, Any], schema: dict[str, Any], names: list[str]) -> None:
    for name in names:
        if name in schema.get("properties", {}):
            schema["properties"][name] = {"anyOf": [schema["properties"][name], {"type": "null"}]}
    for part in schema.get("allOf", []):
        _allow_null(schemas, schemas[part["$ref"].rsplit("/", 1)[1]] if "$ref" in part else part, names)


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(_URI, Resource(contents=_loaded(), specification=DRAFT202012))


@functools.cache
def _validator(name: str) -> Any:
    return _Validator({"$ref": f"{_URI}#/components/schemas/{name}"}, registry=_registry())


@functools.cache
def _create_properties() -> frozenset[str]:
    schemas = _loaded()["components"]["schemas"]
    names: set[str] = set(KNOWN_GAPS["create body"]["properties"])

    def collect(schema: dict[str, Any]) -> None:
        names.update(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            collect(schemas[part["$ref"].rsplit("/", 1)[1]] if "$ref" in part else part)

    collect(schemas["CreateResponse"])
    return frozenset(names)
