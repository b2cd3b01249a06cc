"""Every sentence Easel shows in Slack, in one place."""

from __future__ import annotations

from bot import options

WORKING_REACTION = "hourglass_flowing_sand"
FAILED_REACTION = "warning"

INSTRUCTIONS = (
    "You are Easel, an image assistant inside Slack. People ask you for images in a Slack thread; each "
    "message in the thread continues the same conversation. When the person asks for an image, or for a change "
    "to the last image, call the image_generation tool with a clear, detailed prompt that keeps what they asked "
    "for. Images attached to the message are inputs to edit or combine. If the request is too unclear to draw, "
    "ask one short question instead. Keep text answers brief; Slack shows them as plain messages."
)


def help_text(*, models: list[str], default_model: str) -> str:
    return (
        "*Easel makes and edits images.*\n"
        "• Mention me with what you want: `@Easel a poster for the Friday quiz, retro style`. "
        "I answer in a thread; reply there (no mention needed) to change the image.\n"
        "• Attach images to edit or combine them: `@Easel put this logo on a mug`.\n"
        "• `/imagine <prompt> [options]` always draws, and starts a thread for later edits.\n"
        "*Options* (in a message or after `/imagine`):\n"
        "`--size 1024x1024|1024x1536|1536x1024|WxH|auto`  `--quality low|medium|high|auto`\n"
        "`--format png|jpeg|webp`  `--compression 0-100` (jpeg, webp)  `--background transparent|opaque|auto`\n"
        f"`--model {'|'.join(models)}` (default {default_model})  `--action auto|generate|edit`"
    )


def bad_option(error: options.OptionError) -> str:
    return f":warning: {error} Nothing was sent. Type `/imagine help` for all options."


def command_accepted(prompt: str) -> str:
    return f":art: On it: _{_short(prompt, 200)}_. The image will appear in a thread in this channel."


def command_root(*, user_id: str, prompt: str, resolved: dict) -> str:
    shown = {k: v for k, v in resolved.items() if k in ("size", "quality", "format", "background", "model")}
    details = ", ".join(f"{k} {v}" for k, v in shown.items())
    return f"<@{user_id}> asked for: {_short(prompt, 2500)}\n_{details}_ — reply in this thread to change it."


def too_many_pending(limit: int) -> str:
    return (
        f":hourglass: You already have {limit} requests in progress. Send this again when one of them "
        "has finished."
    )


def queued(position: int) -> str:
    ahead = "you're next" if position == 1 else f"you're number {position} in the queue"
    return f":hourglass: Every image slot is busy right now; {ahead}. This message moves as the queue does."


def paced(position: int) -> str:
    """The queue message when requests wait for the OpenAI account's rate limit, not for a slot."""
    ahead = "you're next" if position == 1 else f"you're number {position} in the queue"
    return (f":hourglass: Easel is keeping to its OpenAI account's image rate limit; {ahead}. This message moves "
            "as the queue does.")


QUEUE_DONE_WAITING = ":art: Your turn: drawing now."


CAPTION_LIMIT = 3000  # the model's words go in the first image's message up to this length; longer, on their own


def image_comment(
    *, revised_prompt: str | None, notices: list[str], index: int, count: int, caption: str = ""
) -> str:
    """An image's message: on the first image, the notices and the model's own words (`caption`); on each,
    the prompt the image model was given."""
    lines = [f":information_source: {n}" for n in notices] if index == 0 else []
    if index == 0 and caption:
        lines.append(caption)
    label = "Prompt used" if count == 1 else f"Prompt used ({index + 1} of {count})"
    lines.append(f"*{label}:* {_short(revised_prompt or '(not given)', 3000)}")
    return "\n".join(lines)


def attachment_problem(name: str, problem: str) -> str:
    return f":warning: I couldn't use the attached file `{name}`: {problem} Nothing was sent to the image model."


def attachment_failed(reason: str) -> str:
    return f":warning: I couldn't use an attached file: {reason} Nothing was sent to the image model."


NOT_AN_IMAGE = "it is not an image. Attach PNG, JPEG, WebP or GIF images."
HTML_INSTEAD = "Slack sent a web page instead of the file (the app may be missing the files:read scope)."


def too_large(limit_mb: int) -> str:
    return f"it is larger than {limit_mb} MB."


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
CHAIN_EXPIRED_NOTE = (
    "OpenAI no longer has this thread's earlier turns, so I started over from your message and the last image."
)
CHAIN_EXPIRED = f":recycle: {CHAIN_EXPIRED_NOTE}"
NO_OUTPUT = ":thinking_face: The model finished without an image or an answer. Try rephrasing the request."
INTERNAL = ":warning: Something went wrong on Easel's side and this request was not finished. Try again."
SLACK_FAILED = ":warning: The image was made but Slack would not take it ({reason}). Try again in a moment."
SLACK_POST_FAILED = ":warning: Slack would not let Easel start on this request. Try again in a moment."
CANNOT_POST = ":warning: I can't post in this channel. Invite me with `/invite @Easel`, or try in a channel I'm in."


def unknown_model(detail: str) -> str:
    return (
        f":warning: OpenAI doesn't offer that image model to Easel's key ({_short(detail, 300)}). "
        "Pick another with `--model`."
    )


def rejected(detail: str) -> str:
    return f":warning: OpenAI refused the request: {_short(detail, 500)}"


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
