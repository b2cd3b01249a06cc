"""The shape of a Slack request, checked before Bolt reads it.

Bolt trusts the types of the fields it reads (`body["event"]["type"]`, `body["authorizations"][0]`,
`body["view"]["type"]`, ...): a signed payload with `"event": []` or a view without a type makes it raise, and
it answers 500, which Slack retries. Slack itself always sends these fields with one type each, so a payload
with another type is malformed: `problem()` names what is wrong with it, and the request is refused with a 400
before Bolt sees it. What the fields hold (ids, timestamps) is checked later, by the listeners.
"""

from __future__ import annotations

from typing import Any

_TEXT = ("type", "subtype", "team_id", "user_id", "channel_id", "enterprise_id", "api_app_id", "token",
         "event_id", "context_team_id", "context_enterprise_id", "thread_ts", "ts", "event_ts", "text",
         "callback_id", "trigger_id", "response_url", "bot_id", "user_team", "channel_type",
         "function_execution_id", "bot_access_token", "app_installed_team_id")
_FLAG = ("is_enterprise_install", "is_ext_shared_channel", "hidden")
_OBJECT = ("message", "previous_message", "item", "assistant_thread", "container", "state", "function_data",
           "bot_profile", "edited")
_NAMED = ("team", "user", "channel", "enterprise")  # a string id, or an object with an `id`
_LISTS = ("authorizations", "actions", "response_urls", "files", "blocks")
_NESTED = ("event", "message", "previous_message", "item", "assistant_thread")


def problem(body: dict[str, Any]) -> str | None:
    """What is malformed in a parsed Slack request body, or None."""
    if not isinstance(body, dict):
        return "the body is not an object"
    found = _fields(body, "")
    if found:
        return found
    kind = body.get("type")
    if kind == "event_callback" and not isinstance(body.get("event"), dict):
        return "event_callback without an event object"
    if body.get("event") is not None and not isinstance(body["event"], dict):
        return "event is not an object"
    if kind in ("block_actions", "interactive_message") and not body.get("actions"):
        return f"{kind} without actions"
    if isinstance(body.get("event"), dict) and not isinstance(body["event"].get("type"), str):
        return "an event without a type"
    if isinstance(kind, str) and kind.startswith("view_"):
        view = body.get("view")
        if not isinstance(view, dict) or not isinstance(view.get("type"), str):
            return f"{kind} without a view type"
    if "view" in body and not isinstance(body["view"], dict):  # Bolt reads body["view"] when the key is there,
        return "view is not an object"  # null included
    return None


def _fields(obj: dict[str, Any], where: str, depth: int = 0) -> str | None:
    for key in _TEXT:
        if key in obj and obj[key] is not None and not isinstance(obj[key], str):
            return f"{where}{key} is not a string"
    for key in _FLAG:
        if key in obj and obj[key] is not None and not isinstance(obj[key], (bool, str)):
            return f"{where}{key} is not a boolean"
    for key in _OBJECT:
        if key in obj and obj[key] is not None and not isinstance(obj[key], dict):
            return f"{where}{key} is not an object"
    for key in _NAMED:
        value = obj.get(key)
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, dict):
            return f"{where}{key} is neither an id nor an object"
        for inner in ("id", "team_id", "enterprise_id", "name"):
            if inner in value and value[inner] is not None and not isinstance(value[inner], str):
                return f"{where}{key}.{inner} is not a string"
    for key in _LISTS:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            return f"{where}{key} is not a list of objects"
    for entry in obj.get("authorizations") or []:
        found = _fields(entry, f"{where}authorizations[].", depth + 1)
        if found:
            return found
    for entry in obj.get("actions") or []:
        for inner in ("action_id", "block_id", "type", "value"):
            if inner in entry and entry[inner] is not None and not isinstance(entry[inner], str):
                return f"{where}actions[].{inner} is not a string"
    if depth < 2:
        for key in _NESTED:
            if isinstance(obj.get(key), dict):
                found = _fields(obj[key], f"{where}{key}.", depth + 1)
                if found:
                    return found
    return None
