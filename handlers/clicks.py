"""Pure translation of button clicks, the Edit modal and the "Edit with Easel" shortcut into jobs. No I/O:
the listeners look the image up (`bot.interactions`) and pass it in.

- A click names an image by its Slack file id (the button's value, not trusted): the listener finds Easel's
  record of it in the click's workspace and channel, or refuses.
- Reroll is the image's request again, chained where the image's own turn was (a sibling); Vary, HD and
  Edit are edits of the image, chained on its response (a branch, when the image is not the newest).
- A double click is one job: the click's claim is keyed on the person, the button and the image.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from bot import buttons, options
from bot.policy import Policy
from handlers.payloads import Context, _str, _ts, _without_nul, slack_id
from storage.models import Generation, JobKind, JobOptions, NewJob

NOT_EASELS = (":wave: That button no longer points at an image Easel made in this channel, so there is "
              "nothing to do. Mention Easel to start a new picture.")
TOO_OLD = (":hourglass: Easel no longer keeps the request behind that image (it is older than the retention "
           "period), so it cannot reroll it. Vary, HD and Edit still work on it.")
NO_IMAGE = ":wave: That message carries no image Easel can edit (PNG, JPEG, WebP or a still GIF)."
EDIT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
MAX_INSTRUCTION = 3000


@dataclasses.dataclass(frozen=True)
class Click:
    team_id: str
    channel_id: str
    user_id: str
    action_id: str
    file_id: str
    message_ts: str  # the buttons message (the sign of work goes on it)
    thread_ts: str
    action_ts: float
    trigger_id: str | None
    response_url: str | None

    @property
    def claim_key(self) -> str:
        return f"btn:{self.team_id}:{self.user_id}:{self.action_id}:{self.file_id}"


@dataclasses.dataclass(frozen=True)
class Target:
    """The image an edit is for, as the modal carries it (its private_metadata)."""

    team_id: str
    channel_id: str
    thread_ts: str
    message_ts: str
    file_id: str
    width: int | None
    height: int | None
    easel: bool  # one of Easel's images (the edit chains on its response); else an image from a message
    name: str = "image"
    mimetype: str = "image/png"
    url: str | None = None

    def to_metadata(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_metadata(cls, text: Any) -> Target | None:
        try:
            data = json.loads(text) if isinstance(text, str) else None
            target = cls(**data) if isinstance(data, dict) else None
        except (ValueError, TypeError):
            return None
        ok = target is not None and all(slack_id(v) for v in (target.team_id, target.channel_id, target.file_id)) \
            and _ts(target.thread_ts) and _ts(target.message_ts)
        return target if ok else None


def click(body: dict[str, Any]) -> Click | None:
    """A button click on one of Easel's buttons, or None for a payload that is not one."""
    body = _without_nul(body)
    actions = body.get("actions") or []
    action = actions[0] if actions else {}
    container = body.get("container") or {}
    message = body.get("message") or {}
    team = body.get("team") or {}
    user = body.get("user") or {}
    channel = body.get("channel") or {}
    team_id = slack_id(team.get("id") if isinstance(team, dict) else None) or \
        slack_id(user.get("team_id") if isinstance(user, dict) else None)
    channel_id = slack_id(container.get("channel_id")) or slack_id(channel.get("id") if isinstance(channel, dict)
                                                                    else None)
    user_id = slack_id(user.get("id") if isinstance(user, dict) else None)
    message_ts = _ts(container.get("message_ts")) or _ts(message.get("ts"))
    thread_ts = _ts(container.get("thread_ts")) or _ts(message.get("thread_ts")) or message_ts
    file_id = slack_id(action.get("value"))
    try:
        action_ts = float(str(action.get("action_ts")))
    except ValueError:
        action_ts = 0.0
    if not (team_id and channel_id and user_id and message_ts and thread_ts and file_id and action_ts > 0):
        return None
    return Click(team_id=team_id, channel_id=channel_id, user_id=user_id, action_id=str(action.get("action_id")),
                 file_id=file_id, message_ts=message_ts, thread_ts=thread_ts, action_ts=action_ts,
                 trigger_id=_str(body.get("trigger_id")), response_url=_str(body.get("response_url")))


def click_job(c: Click, image: Generation, ctx: Context, policy: Policy | None = None) -> NewJob | str:
    """The job of a Reroll, Vary or HD click on `image` (Easel's record of it), or why there is none (the
    channel's `policy` may refuse it)."""
    policy = policy or Policy()
    if (refusal := policy.refusal(c.user_id)) is not None:
        return refusal
    tool = dict(image.options or {})
    if c.action_id == buttons.HD:
        tool = buttons.hd_tool(tool, ctx.table, image.width, image.height)
    if (problem := policy.tool_problem(tool)) is not None:
        return f":no_entry_sign: {problem}"
    if policy.settings.max_quality and tool.get("quality") == "auto":
        tool["quality"] = policy.settings.max_quality
    tool["moderation"] = policy.moderation(ctx.defaults)  # the channel's level now, not the image's then
    base = {
        "dedupe_key": f"{c.claim_key}:{c.action_ts:.6f}",
        "kind": JobKind.GENERATE,
        "source": "button",
        "team_id": c.team_id,
        "channel_id": c.channel_id,
        "user_id": c.user_id,
        "message_ts": c.message_ts,
        "thread_ts": image.thread_ts or c.thread_ts,
        "force_image": True,
        "response_url": c.response_url,  # a refusal in the worker (not in the user group) is said privately
    }
    shared = {"branch": True, "show_cost": policy.show_costs, "usergroup": policy.usergroup}
    if c.action_id == buttons.REROLL:
        if not image.request_text:
            return TOO_OLD
        return NewJob(text=image.request_text, options=JobOptions(
            tool=tool, chain_on=image.parent_response_id, **shared), **base)
    if c.action_id == buttons.VARY:
        return NewJob(text=buttons.VARY_PROMPT, options=JobOptions(
            tool={**tool, "action": "edit"}, chain_on=image.response_id, **shared), **base)
    return NewJob(text=buttons.HD_PROMPT, options=JobOptions(tool=tool, chain_on=image.response_id, **shared),
                  **base)


def easel_target(c: Click, image: Generation) -> Target:
    return Target(team_id=c.team_id, channel_id=c.channel_id, thread_ts=image.thread_ts or c.thread_ts,
                  message_ts=c.message_ts, file_id=c.file_id, width=image.width, height=image.height, easel=True)


def shortcut_target(body: dict[str, Any]) -> Target | str:
    """The image of a message the "Edit with Easel" shortcut was used on (its first image), or why none."""
    body = _without_nul(body)
    message = body.get("message") or {}
    team = body.get("team") or {}
    channel = body.get("channel") or {}
    team_id = slack_id(team.get("id") if isinstance(team, dict) else None)
    channel_id = slack_id(channel.get("id") if isinstance(channel, dict) else None)
    message_ts = _ts(message.get("ts")) or _ts(body.get("message_ts"))
    if not (team_id and channel_id and message_ts):
        return NO_IMAGE
    for f in message.get("files") or []:
        if isinstance(f, dict) and slack_id(f.get("id")) and f.get("mimetype") in EDIT_IMAGE_TYPES:
            width, height = f.get("original_w"), f.get("original_h")
            return Target(team_id=team_id, channel_id=channel_id, thread_ts=_ts(message.get("thread_ts")) or message_ts,
                          message_ts=message_ts, file_id=f["id"],
                          width=width if isinstance(width, int) else None,
                          height=height if isinstance(height, int) else None, easel=False,
                          name=_str(f.get("name")) or f["id"], mimetype=f["mimetype"],
                          url=_str(f.get("url_private_download")) or _str(f.get("url_private")))
    return NO_IMAGE


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text}, "value": value}


def _select(block_id: str, label: str, values: tuple[str, ...], initial: str) -> dict[str, Any]:
    opts = [_option(v, v) for v in values]
    element: dict[str, Any] = {"type": "static_select", "action_id": "value", "options": opts}
    if initial in values:
        element["initial_option"] = _option(initial, initial)
    return {"type": "input", "block_id": block_id, "label": {"type": "plain_text", "text": label},
            "element": element}


def edit_view(target: Target, tool: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The Edit modal, prefilled with the image's options (`tool`: the image tool it was made with)."""
    model = ctx.table.get(str(tool.get("model") or ctx.defaults.model))
    qualities = model.qualities if model is not None else ("low", "medium", "high", "auto")
    size = str(tool.get("size") or "auto")
    if size == "auto" and target.width and target.height:
        size = f"{target.width}x{target.height}"
    fmt = str(tool.get("output_format") or "png")
    return {
        "type": "modal",
        "callback_id": buttons.EDIT_VIEW,
        "private_metadata": target.to_metadata(),
        "title": {"type": "plain_text", "text": "Edit with Easel"},
        "submit": {"type": "plain_text", "text": "Edit"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "input", "block_id": "instruction", "label": {"type": "plain_text", "text": "What to change"},
             "element": {"type": "plain_text_input", "action_id": "value", "multiline": True,
                         "max_length": MAX_INSTRUCTION,
                         "placeholder": {"type": "plain_text", "text": "make the sky stormy"}}},
            {"type": "input", "block_id": "mask", "optional": True,
             "label": {"type": "plain_text", "text": "Mask (optional)"},
             "hint": {"type": "plain_text", "text": "A PNG the size of the image: its transparent pixels mark "
                                                    "what to change."},
             "element": {"type": "file_input", "action_id": "value", "filetypes": ["png"], "max_files": 1}},
            {"type": "input", "block_id": "size", "label": {"type": "plain_text", "text": "Size"},
             "element": {"type": "plain_text_input", "action_id": "value", "initial_value": size}},
            _select("quality", "Quality", tuple(qualities), str(tool.get("quality") or "auto")),
            _select("format", "Format", ("png", "jpeg", "webp"), fmt),
            _select("background", "Background", ("auto", "opaque", "transparent"),
                    str(tool.get("background") or "auto")),
        ],
    }


@dataclasses.dataclass(frozen=True)
class Submission:
    target: Target
    user_id: str
    view_id: str
    instruction: str
    mask: dict[str, Any] | None  # the file object of the mask attached, if any
    size: str
    quality: str
    format: str
    background: str


def submission(body: dict[str, Any]) -> Submission | None:
    body = _without_nul(body)
    view = body.get("view") or {}
    target = Target.from_metadata(view.get("private_metadata"))
    user = body.get("user") or {}
    user_id = slack_id(user.get("id") if isinstance(user, dict) else None)
    view_id = slack_id(view.get("id"))
    values = ((view.get("state") or {}).get("values")) or {}
    if target is None or user_id is None or view_id is None or not isinstance(values, dict):
        return None

    def field(block: str) -> dict[str, Any]:
        entry = values.get(block)
        value = entry.get("value") if isinstance(entry, dict) else None
        return value if isinstance(value, dict) else {}

    def selected(block: str, default: str) -> str:
        option = field(block).get("selected_option")
        return str(option.get("value")) if isinstance(option, dict) and option.get("value") else default

    files = [f for f in field("mask").get("files") or [] if isinstance(f, dict) and slack_id(f.get("id"))]
    return Submission(target=target, user_id=user_id, view_id=view_id,
                      instruction=str(field("instruction").get("value") or "").strip(),
                      mask=files[0] if files else None, size=str(field("size").get("value") or "auto").strip(),
                      quality=selected("quality", "auto"), format=selected("format", "png"),
                      background=selected("background", "auto"))


_FIELDS = ("size", "quality", "format", "background")


def submission_job(s: Submission, image: Generation | None, ctx: Context,
                   policy: Policy | None = None) -> NewJob | dict[str, str]:
    """The job of a submitted Edit modal, or the errors to show in it (block id -> sentence); the channel's
    `policy` applies as to a message."""
    policy = policy or Policy()
    if (refusal := policy.refusal(s.user_id)) is not None:
        return {"instruction": refusal.removeprefix(":no_entry_sign: ")}
    if not s.instruction:
        return {"instruction": "Say what to change, e.g. “make the sky stormy”."}
    if len(s.instruction) > MAX_INSTRUCTION:
        return {"instruction": f"Keep it under {MAX_INSTRUCTION} characters."}
    tool = dict(image.options or {}) if image is not None else {}
    chosen = {"size": s.size or "auto", "quality": s.quality, "format": s.format, "background": s.background}
    try:
        _, asked = options.parse(" ".join(f"--{k} {v}" for k, v in chosen.items()))
        model = tool.get("model")
        resolved = options.resolve(dataclasses.replace(asked, model=model, action="edit"),
                                   defaults=policy.defaults(ctx.defaults), table=ctx.table,
                                   explicit=[*_FIELDS, *(["model"] if model else [])])
        resolved = policy.clamp(resolved, resolved.chosen)
    except options.OptionError as e:
        text = str(e)
        block = next((f for f in _FIELDS[1:] if f in text.lower()), "size")
        return {block: text.replace("`", "")[:2000]}
    t = s.target
    files: list[dict[str, Any]] = []
    if s.mask is not None or not t.easel:  # the image goes as input: with its mask, or as a message's image
        files.append({"id": t.file_id, "name": t.name, "mimetype": t.mimetype, "size": None, "url": t.url})
    if s.mask is not None:
        m = s.mask
        files.append({"id": m["id"], "name": _str(m.get("name")) or m["id"], "mimetype": "image/png",
                      "size": m.get("size") if isinstance(m.get("size"), int) else None,
                      "url": _str(m.get("url_private_download")) or _str(m.get("url_private"))})
    return NewJob(
        dedupe_key=f"view:{t.team_id}:{s.view_id}",
        kind=JobKind.GENERATE,
        source="edit",
        team_id=t.team_id,
        channel_id=t.channel_id,
        user_id=s.user_id,
        text=s.instruction,
        message_ts=t.message_ts,
        thread_ts=t.thread_ts,
        options=JobOptions(tool=resolved.tool(), notices=tuple(resolved.notices), chosen=tuple(resolved.chosen),
                           branch=True, chain_on=image.response_id if image is not None else None,
                           mask=s.mask is not None, show_cost=policy.show_costs, usergroup=policy.usergroup),
        files=files,
        force_image=True,
    )


def easel_target_of(target: Target, image: Generation) -> Target:
    """A shortcut's image that is one of Easel's: edited like Edit… does (chained on its response)."""
    return dataclasses.replace(target, easel=True, thread_ts=image.thread_ts or target.thread_ts,
                               width=image.width or target.width, height=image.height or target.height)
