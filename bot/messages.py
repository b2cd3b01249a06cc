"""Every sentence Easel shows in Slack, in one place."""

from __future__ import annotations

from bot import limits, options
from bot.image_models import ModelTable

WORKING_REACTION = "hourglass_flowing_sand"
FAILED_REACTION = "warning"
REFUSED_REACTION = "no_entry_sign"  # a request over the per-person cap, after the one notice of its burst


def escape(text: str) -> str:
    """User or model text as Slack shows it and never acts on: `<!channel>`, `<!here>`, `<!subteam^…>` and
    `<@U…>` become plain words (Slack's own escaping: &, < and > as entities)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def help_text(*, models: list[str], default_model: str, table: ModelTable | None = None, web: bool = False) -> str:
    """The usage text; the options a model must support are listed with the models that do."""
    table = table or ModelTable()
    qualities = [q for q in options.QUALITIES if table.offering("quality", q)]
    extra = [q for q in qualities if q not in ("low", "medium", "high", "auto")]
    quality = f"`--quality {'|'.join(qualities)}`"
    if extra:
        quality += f" ({', '.join(extra)}: {', '.join(table.offering('quality', extra[0]))})"
    lines = [
        "*Easel makes and edits images.*",
        "• Mention me with what you want: `@Easel a poster for the Friday quiz, retro style`. "
        "I answer in a thread; reply there (no mention needed) to change the image.",
        "• Attach images to edit or combine them: `@Easel put this logo on a mug`.",
        "• `/imagine &lt;prompt&gt; [options]` always draws, and starts a thread for later edits.",
        "• `/imagine usage` shows what you have spent today and this month, and what is left.",
        "• `/imagine settings` shows this channel's settings (admins change them there).",
        "*Options* (in a message or after `/imagine`):",
        f"`--size 1024x1024|1024x1536|1536x1024|WxH|auto`  {quality}",
        "`--format png|jpeg|webp`  `--compression 0-100` (jpeg, webp)  `--background transparent|opaque|auto`",
        f"`--model {'|'.join(models)}` (default {default_model})  `--action auto|generate|edit`",
    ]
    for flag, field, values in (("complexity", "complexity", options.COMPLEXITIES),
                                ("fidelity", "fidelity", options.FIDELITIES)):
        offered = table.offering(field, values[0])
        if offered:
            lines.append(f"`--{flag} {'|'.join(values)}` ({', '.join(offered)})")
    lines.append(f"`--web` / `--no-web`: let the model search the web first (now {'on' if web else 'off'})")
    return "\n".join(lines)


def bad_option(error: options.OptionError) -> str:
    return f":warning: {escape(str(error))} Nothing was sent. Type `/imagine help` for all options."


def command_accepted(prompt: str) -> str:
    return f":art: On it: _{escape(_short(prompt, 200))}_. The image will appear in a thread in this channel."


def command_root(*, user_id: str, prompt: str, resolved: dict) -> str:
    shown = {k: v for k, v in resolved.items() if k in ("size", "quality", "format", "background", "model")}
    details = ", ".join(f"{k} {v}" for k, v in shown.items())
    return f"<@{user_id}> asked for: {escape(_short(prompt, 2500))}\n_{details}_ — reply in this thread to change it."


def too_many_pending(limit: int) -> str:
    return (
        f":hourglass: You already have {limit} requests in progress. Send this again when one of them "
        "has finished."
    )


def too_many_pending_burst(limit: int) -> str:
    """Said once for a run of requests over the cap; the others in the run get a reaction only."""
    return (
        f":hourglass: You already have {limit} requests in progress, so I'm not taking more until one "
        f"finishes: this one and any you send meanwhile (marked :{REFUSED_REACTION}:) were not drawn. "
        "Send them again then."
    )


def _place(position: int) -> str:
    return "you're next" if position == 1 else f"you're number {position} in the queue"


def queued(position: int) -> str:
    return f":hourglass: Every image slot is busy right now; {_place(position)}. This message moves as the queue does."


def paced(position: int) -> str:
    """The queue message when requests wait for the OpenAI account's rate limit, not for a slot."""
    return (f":hourglass: Easel is keeping to its OpenAI account's image rate limit; {_place(position)}. This "
            "message moves as the queue does.")


QUEUE_DONE_WAITING = ":art: Your turn: working on it now."
STARTING = ":art: On it: starting in a moment."


def _seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


def drawing(*, model: str, quality: str, size: str, elapsed: float, typical: float | None,
            preview: bool = False, thinking: bool = False) -> str:
    """A generation's status message while it draws: the time so far, and what is left going by how long the
    recent ones like it took (`typical`, None when there were none). `thinking`: the model has not started
    the image yet (it refines the prompt first, or answers in words)."""
    if thinking:
        line = f":thought_balloon: Working on it ({model}, {quality} quality, {size} if it draws): " \
               f"{_seconds(elapsed)} so far"
    else:
        line = f":art: Drawing with {model} ({quality} quality, {size}): {_seconds(elapsed)} so far"
    if typical is None:
        line += "."
    elif typical - elapsed >= 1:
        line += f", about {_seconds(typical - elapsed)} left (recent ones took {_seconds(typical)})."
    else:
        line += f"; recent ones took about {_seconds(typical)}, so it should be nearly done."
    return line + (" A preview:" if preview else "")


CAPTION_LIMIT = 3000  # the model's words go in the first image's message up to this length; longer, on their own
COMMENT_LIMIT = 4000  # an image's whole message: Slack's advice for a message's text (it truncates far later)


def image_comment(
    *, revised_prompt: str | None, notices: list[str], index: int, count: int, caption: str = "", links: str = "",
    cost: str = "",
) -> str:
    """An image's message: on the first image, the notices, the model's own words (`caption`, escaped here) and
    the pages it cited (`links`, Slack links already); on each, the prompt the image model was given."""
    lines = [f":information_source: {n}" for n in notices] if index == 0 else []
    if index == 0 and caption:
        lines.append(_short_escaped(caption, CAPTION_LIMIT))
    if index == 0 and links:
        lines.append(links)
    if index == 0 and cost:
        lines.append(f"_{cost}_")
    label = "Prompt used" if count == 1 else f"Prompt used ({index + 1} of {count})"
    head = "\n".join([*lines, f"*{label}:* "])
    room = max(200, COMMENT_LIMIT - len(head))
    return _short(head + _short_escaped(revised_prompt or "(not given)", min(room, 3000)), COMMENT_LIMIT)


def _short_escaped(text: str, limit: int) -> str:
    """`text` escaped, then cut to `limit` characters (never inside an entity such as &amp;)."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&", max(0, len(cut) - 5))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def attachment_problem(name: str, problem: str) -> str:
    return (f":warning: I couldn't use the attached file `{escape(name)}`: {problem} Nothing was sent to the "
            "image model.")


def attachment_failed(reason: str, name: str | None = None, *, whole: bool = False) -> str:
    """`whole`: the reason is about all of the message's images (how many, how large together)."""
    which = "the attached images" if whole else f"the attached file `{escape(name)}`" if name else \
        "an attached file"
    return f":warning: I couldn't use {which}: {reason} Nothing was sent to the image model."


NOT_AN_IMAGE = "it is not an image. Attach PNG, JPEG, WebP or GIF images."
HTML_INSTEAD = "Slack sent a web page instead of the file (the app may be missing the files:read scope)."
DAMAGED = "it is damaged or cut short, so it cannot be read as an image."
ANIMATED = "it is an animated GIF; OpenAI takes still images only."


def too_large(limit_bytes: int) -> str:
    return f"it is larger than {limits.mb(limit_bytes)}, the most one attached image may be."


FAR_TOO_MANY_PIXELS = (f"it claims far more pixels than an attached image may have (at most "
                       f"{limits.MAX_PIXELS / 1_000_000:g} megapixels), as a decompression bomb does.")


def too_many_pixels(width: int, height: int) -> str:
    return (f"it is {width:,}x{height:,} pixels; an attached image may have at most "
            f"{limits.MAX_PIXELS / 1_000_000:g} megapixels.")


def too_many_attachments(count: int) -> str:
    return f"there are {count}; Easel takes at most {limits.MAX_IMAGES} images per message."


def attachments_too_large(total: int) -> str:
    return (f"they come to {limits.mb(total)} or more together; Easel takes at most "
            f"{limits.mb(limits.MAX_TOTAL_BYTES)} per message.")


def attachments_too_slow(seconds: float) -> str:
    return f"they took longer than {seconds:g} seconds to download, so Easel stopped waiting for them."


def download_too_slow(min_rate: float) -> str:
    return f"Slack sent it too slowly (under {min_rate / 1024:g} KB a second), so Easel stopped waiting for it."


def download_too_long(seconds: float) -> str:
    return f"it took longer than {seconds:g} seconds to download, so Easel stopped waiting for it."


# Failures: what happened, in plain words, and what to do next.
MODERATION = (
    ":no_entry: OpenAI's safety system blocked this request. Rephrasing it, or leaving out what might read as "
    "harmful, often helps. The thread still works: reply with a new request."
)
RATE_LIMITED = (
    ":hourglass: OpenAI is rate-limiting Easel right now, so this one was not drawn. Try again in a minute."
)
QUOTA_EXHAUSTED = (
    ":warning: Easel's OpenAI account has used up its quota, so this one was not drawn. Whoever runs Easel "
    "needs to check the account's plan and billing."
)
TIMED_OUT = (
    ":stopwatch: The image took too long and was given up. Try again, perhaps with `--quality low` or a "
    "smaller size."
)
UNAVAILABLE = ":cloud: OpenAI could not be reached or had an error. Try again in a moment."
FAILED = ":warning: OpenAI could not finish this request (Easel has logged why). Try again, or rephrase it."
BAD_INPUT_IMAGE = (
    ":warning: OpenAI could not use an attached image (it may be damaged, too large, or of a kind it does not "
    "read). Try another image."
)
CHAIN_EXPIRED_NOTE = (
    "OpenAI no longer has this thread's earlier turns, so I started over from your message and the last image."
)
CHAIN_EXPIRED = f":recycle: {CHAIN_EXPIRED_NOTE}"
NO_OUTPUT = ":thinking_face: The model finished without an image or an answer. Try rephrasing the request."
INTERNAL = ":warning: Something went wrong on Easel's side and this request was not finished. Try again."
SLACK_FAILED = ":warning: The image was made but Slack would not take it ({reason}). Try again in a moment."
SLACK_POST_FAILED = ":warning: Slack would not let Easel start on this request. Try again in a moment."
CANNOT_POST = ":warning: I can't post in this channel. Invite me with `/invite @Easel`, or try in a channel I'm in."


def unknown_model(model: str) -> str:
    return f":warning: OpenAI doesn't offer the image model {model} to Easel's key. Pick another with `--model`."


# OpenAI's own words are never shown (they can name the organisation or project); they go to the log.
REJECTED = (
    ":warning: OpenAI refused this request. Easel has logged the details; rephrasing it, or other options, "
    "may help."
)
KEY_REJECTED = ":warning: OpenAI did not accept Easel's API key, so nothing was drawn. An admin needs to check it."
CUT_SHORT = ":warning: OpenAI cut the answer short. Try again, perhaps with a shorter request."


def rejected(_detail: str = "") -> str:
    """What the user is told of a refusal: Easel's sentence, whatever OpenAI said (the detail is logged)."""
    return REJECTED


def not_possible(reason: str) -> str:
    """A refused option Easel cannot work around: `reason` is Easel's own account of what the model takes."""
    return f":warning: {reason} Nothing was drawn; send the request again with options that work."


def shut_down_model(model: str, date: str, use: str) -> str:
    return f":warning: {model} was shut down by OpenAI on {date}. Use `--model {use}` instead."


def ending_soon(model: str, date: str, days: int, then: str | None) -> str:
    when = "tomorrow" if days == 1 else f"in {days} days"
    after = f"; Easel will then use {then}" if then else ""
    return f"{model} shuts down on {date} ({when}){after}."


def chat_model_replaced(old: str, date: str | None, new: str) -> str:
    return f"{old} was shut down by OpenAI on {date}, so Easel answers with {new} instead."


def retried_elsewhere(model: str, what: str, other: str) -> str:
    return f"OpenAI says {model} cannot take {what}, so this one is drawn with {other}."


def dropped_default(model: str, what: str) -> str:
    return f"OpenAI says {model} cannot take {what}; it was only a default, so it was left out."


def sources(links: list[tuple[str, str]]) -> str:
    """The web pages the model cited, as Slack links."""
    shown = [f"<{url.replace('|', '%7C').replace('<', '%3C').replace('>', '%3E')}|{_link_text(title or url)}>"
             for url, title in links]
    return "*Sources:* " + " · ".join(shown)


def _link_text(text: str) -> str:
    text = " ".join(text.split())
    return _short(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "¦"), 80)


def partial_moderation(count: int) -> str:
    return f":no_entry: {count} of the images were blocked by OpenAI's safety system."


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_for_slack(text: str, limit: int = 3900) -> list[str]:
    """Cut a long answer into messages Slack accepts, at paragraph, line or word boundaries."""
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        cut = max(text.rfind("\n\n", 0, limit), text.rfind("\n", 0, limit))
        if cut < limit // 2:
            cut = text.rfind(" ", 0, limit)
        if cut < limit // 2:
            cut = limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


FORGET_WHERE = ":information_source: Say `@Easel forget` in the thread you want me to forget."
NOTHING_TO_FORGET = ":information_source: I have nothing of this thread to forget."
FORGOTTEN = (":wastebasket: Forgotten: this thread's chain of images and what I kept of it (prompts, options). A "
             "new mention here starts afresh.")


def forget_not_yours(started_by: str) -> str:
    return (f":no_entry_sign: Only <@{started_by}>, who started this thread, or a workspace admin can make me "
            "forget it.")
