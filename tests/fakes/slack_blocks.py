"""What Slack checks in Block Kit before it posts a message or opens a modal, as far as Easel uses it.

Slack answers `invalid_blocks` (messages) or `invalid_arguments` (views) with a line per problem in
`response_metadata.messages`; these functions return those lines (empty: the blocks are fine).
Sources: docs.slack.dev Block Kit reference (blocks, block elements, composition objects, views).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_ACTION_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_ACTION_ID = 255
MAX_VALUE = 2000
MAX_TITLE = 24
MAX_PRIVATE_METADATA = 3000
MAX_CALLBACK_ID = 255
SLACK_FILE_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif")  # a slack_file image block shows only these
MESSAGE_BLOCKS = ("actions", "context", "divider", "header", "image", "rich_text", "section", "file", "markdown")
VIEW_BLOCKS = (*MESSAGE_BLOCKS, "input")
INPUT_ELEMENTS = ("plain_text_input", "static_select", "file_input", "checkboxes", "radio_buttons",
                  "number_input", "multi_static_select", "users_select", "conversations_select")
FILE_TYPES = ("png", "jpg", "jpeg", "gif", "webp", "pdf", "txt", "csv")


def _text(obj: Any, where: str, *, plain: bool = False, limit: int = 3000) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in (("plain_text",) if plain else ("plain_text", "mrkdwn")):
        return [f"[ERROR] must be a {'plain_text' if plain else 'text'} object [json-pointer:{where}]"]
    if not isinstance(obj.get("text"), str) or not obj["text"]:
        return [f"[ERROR] text is required [json-pointer:{where}/text]"]
    if len(obj["text"]) > limit:
        return [f"[ERROR] must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    return []


def _option_problems(options: Any, where: str) -> list[str]:
    if not isinstance(options, list) or not 1 <= len(options) <= 100:
        return [f"[ERROR] must have between 1 and 100 options [json-pointer:{where}]"]
    out: list[str] = []
    for i, o in enumerate(options):
        if not isinstance(o, dict) or not isinstance(o.get("value"), str):
            out.append(f"[ERROR] an option needs a value [json-pointer:{where}/{i}]")
            continue
        out += _text(o.get("text"), f"{where}/{i}/text", plain=True, limit=75)
    return out


def _element(el: Any, where: str, action_ids: set[str]) -> list[str]:
    if not isinstance(el, dict) or not isinstance(el.get("type"), str):
        return [f"[ERROR] an element needs a type [json-pointer:{where}]"]
    out: list[str] = []
    action_id = el.get("action_id")
    if action_id is not None:
        if not isinstance(action_id, str) or not action_id or len(action_id) > MAX_ACTION_ID:
            out.append(f"[ERROR] action_id must be 1 to {MAX_ACTION_ID} characters [json-pointer:{where}/action_id]")
        elif action_id in action_ids:
            out.append(f"[ERROR] action_id {action_id} is used twice [json-pointer:{where}/action_id]")
        else:
            action_ids.add(action_id)
    kind = el["type"]
    if kind == "button":
        out += _text(el.get("text"), f"{where}/text", plain=True, limit=MAX_BUTTON_TEXT)
        if "value" in el and (not isinstance(el["value"], str) or len(el["value"]) > MAX_VALUE):
            out.append(f"[ERROR] value must be at most {MAX_VALUE} characters [json-pointer:{where}/value]")
    elif kind == "static_select":
        out += _option_problems(el.get("options"), f"{where}/options")
        initial = el.get("initial_option")
        if initial is not None and initial not in (el.get("options") or []):
            out.append(f"[ERROR] initial_option must be one of the options [json-pointer:{where}/initial_option]")
    elif kind == "file_input":
        types = el.get("filetypes")
        if types is not None and (not isinstance(types, list) or any(t not in FILE_TYPES for t in types)):
            out.append(f"[ERROR] unknown file type [json-pointer:{where}/filetypes]")
        if not 1 <= int(el.get("max_files", 10)) <= 10:
            out.append(f"[ERROR] max_files must be between 1 and 10 [json-pointer:{where}/max_files]")
    elif kind == "plain_text_input" and "initial_value" in el and not isinstance(el["initial_value"], str):
        out.append(f"[ERROR] initial_value must be a string [json-pointer:{where}/initial_value]")
    return out


def _image(block: Mapping[str, Any], where: str, file_type: Callable[[str], str | None]) -> list[str]:
    out = _text(block.get("alt_text"), f"{where}/alt_text", plain=True, limit=2000) \
        if not isinstance(block.get("alt_text"), str) else []
    slack_file = block.get("slack_file")
    if slack_file is not None:
        file_id = slack_file.get("id") if isinstance(slack_file, dict) else None
        mimetype = file_type(str(file_id)) if file_id else None
        if mimetype is None:
            out.append(f"[ERROR] invalid slack_file [json-pointer:{where}/slack_file]")
        elif mimetype not in SLACK_FILE_IMAGE_TYPES:  # Slack shows png, jpg/jpeg and gif only
            out.append(f"[ERROR] unsupported image type {mimetype} [json-pointer:{where}/slack_file]")
    elif not isinstance(block.get("image_url"), str):
        out.append(f"[ERROR] image_url or slack_file is required [json-pointer:{where}]")
    return out


def blocks_problems(blocks: Any, *, kinds: tuple[str, ...], limit: int,
                    file_type: Callable[[str], str | None]) -> list[str]:
    """`file_type(file_id)`: the mimetype of a file Slack has, or None."""
    if not isinstance(blocks, list):
        return ["[ERROR] blocks must be a list [json-pointer:/blocks]"]
    if len(blocks) > limit:
        return [f"[ERROR] no more than {limit} items allowed [json-pointer:/blocks]"]
    out: list[str] = []
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        action_ids: set[str] = set()  # an action_id is unique within its block
        where = f"/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in kinds:
            out.append(f"[ERROR] unsupported type [json-pointer:{where}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id or len(block_id) > 255 or block_id in block_ids:
                out.append(f"[ERROR] block_id must be unique, 1 to 255 characters [json-pointer:{where}/block_id]")
            else:
                block_ids.add(block_id)
        kind = block["type"]
        if kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTION_ELEMENTS:
                out.append(f"[ERROR] must have 1 to {MAX_ACTION_ELEMENTS} elements [json-pointer:{where}/elements]")
                continue
            for j, el in enumerate(elements):
                out += _element(el, f"{where}/elements/{j}", action_ids)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                out.append(f"[ERROR] must have 1 to 10 elements [json-pointer:{where}/elements]")
        elif kind == "image":
            out += _image(block, where, file_type)
        elif kind == "section":
            if "text" in block:
                out += _text(block["text"], f"{where}/text")
        elif kind == "input":
            out += _text(block.get("label"), f"{where}/label", plain=True, limit=2000)
            element = block.get("element")
            if not isinstance(element, dict) or element.get("type") not in INPUT_ELEMENTS:
                out.append(f"[ERROR] unsupported input element [json-pointer:{where}/element]")
            else:
                out += _element(element, f"{where}/element", set())
    return out


def view_problems(view: Any, file_type: Callable[[str], str | None]) -> list[str]:
    if not isinstance(view, dict):
        return ["[ERROR] view must be an object [json-pointer:/view]"]
    if view.get("type") not in ("modal", "home"):
        return ["[ERROR] must be modal or home [json-pointer:/view/type]"]
    out = _text(view.get("title"), "/view/title", plain=True, limit=MAX_TITLE)
    blocks = view.get("blocks")
    out += blocks_problems(blocks, kinds=VIEW_BLOCKS, limit=MAX_VIEW_BLOCKS, file_type=file_type)
    has_input = isinstance(blocks, list) and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
    if has_input and view.get("submit") is None:
        out.append("[ERROR] a view with input blocks needs submit [json-pointer:/view/submit]")
    for key, limit in (("private_metadata", MAX_PRIVATE_METADATA), ("callback_id", MAX_CALLBACK_ID)):
        if key in view and (not isinstance(view[key], str) or len(view[key]) > limit):
            out.append(f"[ERROR] must be at most {limit} characters [json-pointer:/view/{key}]")
    for key in ("submit", "close"):
        if view.get(key) is not None:
            out += _text(view[key], f"/view/{key}", plain=True, limit=24)
    return out
