"""Pure translation of Slack payloads into jobs. No I/O: the listeners do the one database look-up needed.

Decisions made here:
- which messages are for Easel (mentions, DMs, replies in threads Easel owns) and which are ignored;
- the de-duplication key: one Slack message is one job, however often and by whichever event it arrives
  (`app_mention` and `message` for the same message share channel and ts);
- flags, attachments and empty prompts, checked before anything is sent anywhere.
"""

from __future__ import annotations

import dataclasses
import html
import re
from typing import Any

from bot import image_models, limits, messages, options
from bot.policy import Policy
from storage.models import JobKind, JobOptions, NewJob, Thread

HANDLED_SUBTYPES = (None, "file_share", "thread_broadcast")
IMAGE_MIMETYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
MAX_PROMPT_CHARS = 32_000
FORGET = "forget"  # the whole message (after the mention): forget this thread
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")
_SLACK_ID = re.compile(r"[A-Z0-9]{1,32}")  # team, channel, user and file ids: what fits Easel's columns
_SLACK_TS = re.compile(r"[0-9]{1,20}\.[0-9]{1,8}")
_TRIGGER = re.compile(r"[0-9A-Za-z._-]{1,120}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclasses.dataclass(frozen=True)
class Context:
    """What translation needs besides the payload."""

    defaults: options.Defaults
    table: image_models.ModelTable


@dataclasses.dataclass(frozen=True)
class Routed:
    """A job to store, whether it starts Easel's ownership of its thread, and the thread's new sticky flags."""

    job: NewJob
    start_thread: bool = False
    thread_options: dict[str, Any] | None = None


def _without_nul(value: Any) -> Any:
    """Slack text can carry NUL characters, and JSON lone surrogates (half of a UTF-16 pair); no database can
    store either, so they never get that far (a surrogate becomes U+FFFD, the replacement character)."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        return _SURROGATE.sub("\ufffd", value) if not value.isascii() else value
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def slack_id(value: Any) -> str | None:
    """A team, channel, user or file id as Slack writes them; anything else (too long, a NUL, another type) is
    not one, and the request carrying it is ignored."""
    return value if isinstance(value, str) and _SLACK_ID.fullmatch(value) else None


def _ts(value: Any) -> str | None:
    return value if isinstance(value, str) and _SLACK_TS.fullmatch(value) else None


def clean_text(text: Any, bot_user_id: str | None) -> str:
    """Slack's wire text to what the user typed: drop the mention of Easel, unescape, unwrap links."""
    if not isinstance(text, str):
        return ""
    if bot_user_id:
        text = _mention_of(bot_user_id).sub(" ", text)
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    text = html.unescape(text.replace("&nbsp;", " "))
    return " ".join(text.replace("\r", "").split(" ")).strip()


def thread_of(event: dict[str, Any]) -> str | None:
    """The thread a message was posted in, if it is a reply (not a thread root)."""
    thread_ts, ts = _ts(event.get("thread_ts")), _ts(event.get("ts"))
    return thread_ts if thread_ts and thread_ts != ts else None


def is_ignored(event: dict[str, Any], *, bot_user_id: str | None, bot_id: str | None) -> bool:
    """Edits, deletions, Easel's own messages and other bots' never make a job."""
    if event.get("subtype") not in HANDLED_SUBTYPES or event.get("hidden"):
        return True
    if event.get("bot_id") or event.get("bot_profile"):
        return True
    user = slack_id(event.get("user"))
    if user is None or user == bot_user_id:
        return True
    if event.get("thread_ts") not in (None, "") and _ts(event["thread_ts"]) is None:
        return True
    return not (slack_id(event.get("channel")) and _ts(event.get("ts")))


def _is_dm(event: dict[str, Any]) -> bool:
    return event.get("channel_type") == "im" or str(event.get("channel", "")).startswith("D")


def _mention_of(bot_user_id: str) -> re.Pattern[str]:
    return re.compile(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>")


def _mentions(event: dict[str, Any], bot_user_id: str | None) -> bool:
    text = event.get("text") if isinstance(event.get("text"), str) else ""
    return event.get("type") == "app_mention" or bool(bot_user_id and _mention_of(bot_user_id).search(text))


def attachments(event: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The attached files Easel will download, or the message explaining why they cannot be used: one is not
    an image, or is larger than one may be; there are more than OpenAI takes, or more bytes together (by the
    sizes Slack reports; the download holds each to its limit again, whatever was reported)."""
    files = event.get("files")
    if not isinstance(files, list):
        return [], None
    kept: list[dict[str, Any]] = []
    total = 0
    for f in files:
        if not isinstance(f, dict) or not slack_id(f.get("id")):
            continue
        name = _str(f.get("name")) or _str(f.get("title")) or str(f["id"])
        mimetype = _str(f.get("mimetype")) or ""
        if mimetype not in IMAGE_MIMETYPES:
            return [], messages.attachment_problem(name, messages.NOT_AN_IMAGE)
        size = f.get("size")
        if isinstance(size, int) and size > limits.MAX_IMAGE_BYTES:
            return [], messages.attachment_problem(name, messages.too_large(limits.MAX_IMAGE_BYTES))
        total += size if isinstance(size, int) and size > 0 else 0
        kept.append({
            "id": f["id"],
            "name": name,
            "mimetype": mimetype,
            "size": size if isinstance(size, int) else None,
            "url": _str(f.get("url_private_download")) or _str(f.get("url_private")),
        })
    if len(kept) > limits.MAX_IMAGES:
        return [], messages.attachment_failed(messages.too_many_attachments(len(kept)), whole=True)
    if total > limits.MAX_TOTAL_BYTES:
        return [], messages.attachment_failed(messages.attachments_too_large(total), whole=True)
    return kept, None


def addressed(event: dict[str, Any], *, bot_user_id: str | None, thread: Thread | None) -> bool:
    """Whether a message is for Easel at all (a reply in its thread, a mention, a DM): only then is the
    channel's policy read."""
    return thread is not None or _mentions(event, bot_user_id) or _is_dm(event)


def route_event(
    event: dict[str, Any],
    *,
    team_id: str,
    bot_user_id: str | None,
    thread: Thread | None,
    ctx: Context,
    policy: Policy | None = None,
) -> Routed | None:
    """Decide what a message or app_mention event asks of Easel. `thread` is Easel's record of the thread the
    message was posted in (None when it is not a reply, or the thread is not Easel's); `policy`, the
    channel's settings."""
    policy = policy or Policy()
    event = _without_nul(event)
    channel, ts, user = event["channel"], event["ts"], event["user"]
    if not (channel and ts and user):
        return None
    in_thread = thread_of(event)
    if thread is not None:
        source = "reply"
    elif _mentions(event, bot_user_id):
        source = "mention"
    elif _is_dm(event):
        source = "dm"
    else:
        return None  # channel chatter, or a reply in a thread that is not Easel's
    base = {
        "dedupe_key": f"msg:{team_id}:{channel}:{ts}",
        "source": source,
        "team_id": team_id,
        "channel_id": channel,
        "user_id": user,
        "message_ts": ts,
        "thread_ts": in_thread or ts,
    }
    start = thread is None

    def notice(text: str) -> Routed:
        return Routed(job=NewJob(kind=JobKind.NOTICE, text=text, **base), start_thread=False)

    if (refusal := policy.refusal(user)) is not None:
        return notice(refusal)
    files, problem = attachments(event)
    if problem:
        return notice(problem)
    try:
        prompt, asked = options.parse(clean_text(event.get("text"), bot_user_id))
    except options.OptionError as e:
        return notice(messages.bad_option(e))
    if prompt.lower().strip(" .!") == FORGET and not files and not asked.as_dict():
        if in_thread is None:
            return notice(messages.FORGET_WHERE)
        return Routed(job=NewJob(kind=JobKind.FORGET, text=FORGET, **base))
    if not prompt and not files:
        if thread is not None and not asked.as_dict():
            return None  # an empty reply in Easel's thread (a file-less share, say): nothing to do
        return notice(_help(ctx))
    if len(prompt) > MAX_PROMPT_CHARS:
        return notice(f":warning: That prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
    sticky = {**(thread.options if thread else {}), **asked.as_dict()}
    try:
        resolved = options.resolve(options.ImageOptions(**sticky), defaults=policy.defaults(ctx.defaults),
                                   table=ctx.table, explicit=asked.as_dict())
        resolved = policy.clamp(resolved, resolved.chosen)
    except options.OptionError as e:
        return notice(messages.bad_option(e))
    if resolved.replaced:  # a shut-down model: its replacement sticks to the thread, which is told once
        sticky = {**sticky, "model": resolved.model}
    job = NewJob(
        kind=JobKind.GENERATE,
        text=prompt or "Use the attached image(s).",
        options=_job_options(resolved, fresh=bool(asked.as_dict()) or resolved.replaced is not None,
                             show_cost=policy.show_costs, usergroup=policy.usergroup),
        files=files,
        force_image=False,
        **base,
    )
    return Routed(job=job, start_thread=start, thread_options=sticky)


def _job_options(resolved: options.Resolved, *, fresh: bool, show_cost: bool = True, usergroup: str | None = None,
                 **command: dict[str, Any]) -> JobOptions:
    """`chosen`: the options the person chose (not defaults), for what a refusal may change at run time.
    `usergroup`: the channel's, whose membership the worker checks. `command`: a slash command's `shown` and
    `sticky` options."""
    notices = (*([resolved.replaced] if resolved.replaced else []), *resolved.notices) if fresh else ()
    return JobOptions(tool=resolved.tool(), notices=notices, chosen=tuple(resolved.chosen), web=resolved.web,
                      show_cost=show_cost, usergroup=usergroup, **command)


def _help(ctx: Context) -> str:
    return messages.help_text(models=ctx.table.available(), default_model=ctx.defaults.model, table=ctx.table,
                              web=ctx.defaults.web)


def route_command(command: dict[str, Any], *, ctx: Context, policy: Policy | None = None) -> Routed | str:
    """`/imagine ...`: a job, or the text to answer privately (help, what is wrong with the flags, or why the
    channel's `policy` refuses it)."""
    command = _without_nul(command)
    policy = policy or Policy()
    text = clean_text(command.get("text"), None)
    if text.lower() in ("", "help", "-h", "--help"):
        return _help(ctx)
    try:
        prompt, asked = options.parse(text)
        if not prompt:
            raise options.OptionError("There is no prompt, only options. Say what to draw, e.g. `/imagine a red fox`.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise options.OptionError(f"That prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
        if (refusal := policy.refusal(str(command.get("user_id")))) is not None:
            return refusal
        resolved = options.resolve(asked, defaults=policy.defaults(ctx.defaults), table=ctx.table)
        resolved = policy.clamp(resolved, resolved.chosen)
    except options.OptionError as e:
        return messages.bad_option(e)
    team, channel, user = command.get("team_id"), command.get("channel_id"), command.get("user_id")
    trigger = command.get("trigger_id") if isinstance(command.get("trigger_id"), str) else ""
    if not (slack_id(team) and slack_id(channel) and slack_id(user) and _TRIGGER.fullmatch(trigger)):
        return ":warning: Slack sent this command without its team, channel, user or trigger; try again."
    job = NewJob(
        dedupe_key=f"cmd:{team}:{trigger}",
        kind=JobKind.GENERATE,
        source="command",
        team_id=team,
        channel_id=channel,
        user_id=user,
        text=prompt,
        options=_job_options(resolved, fresh=True, shown=resolved.as_dict(), show_cost=policy.show_costs,
                             usergroup=policy.usergroup,
                             sticky={**asked.as_dict(), **({"model": resolved.model} if resolved.replaced else {})}),
        force_image=True,
        response_url=_str(command.get("response_url")),
    )
    return Routed(job=job)
