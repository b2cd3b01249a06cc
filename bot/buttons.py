"""The buttons under every image Easel posts, and what each click asks of the next turn.

Each image gets Reroll, Vary, HD and Edit… in a message right after the one that shares it (one actions
block per image of the answer). The file share stays the image's own message, for every format: the exactly-
once publication is built on it (files.info says whether a share went through), and an image block of the
same file would show the image twice. Slack renders `slack_file` image blocks only for PNG, JPEG and GIF,
so a block of one is never used for a WebP: `block_image()` says when one may be.

A button's value is the Slack file id of its image, nothing more; the click is checked against Easel's
record of that image (`generations`), in the workspace and channel of the click.
"""

from __future__ import annotations

import io
import math
from typing import Any

from PIL import Image

from bot import image_models
from storage.models import Job, Thread

REROLL = "easel.reroll"
VARY = "easel.vary"
HD = "easel.hd"
EDIT = "easel.edit"
CLICKS = (REROLL, VARY, HD)  # a job at once; EDIT opens the modal
SHORTCUT = "easel.edit_message"  # the message shortcut "Edit with Easel"
EDIT_VIEW = "easel.edit_view"  # the modal's callback id
_LABELS = {REROLL: ":game_die: Reroll", VARY: ":art: Vary", HD: ":mag: HD", EDIT: ":pencil2: Edit…"}
BLOCK_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif")  # what Slack shows in a slack_file image block
FALLBACK_TEXT = "Reroll, vary, re-render in HD or edit this image."
VARY_PROMPT = ("Make a variation of this image: keep its subject, style and composition, and vary the "
               "details.")
HD_PROMPT = ("Render this same image again, at the highest quality and a larger size: change nothing in "
             "its content, composition or style.")
_QUALITY_ORDER = ("low", "medium", "high", "xhigh", "max")


def block_image(mimetype: str) -> bool:
    return mimetype in BLOCK_IMAGE_TYPES


def blocks(file_ids: list[str]) -> list[dict[str, Any]]:
    """The buttons message's blocks: one row of buttons per image, each naming its image's file."""
    out: list[dict[str, Any]] = []
    for i, file_id in enumerate(file_ids):
        if len(file_ids) > 1:
            out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Image {i + 1}"}]})
        out.append({
            "type": "actions",
            "block_id": f"easel.image.{i + 1}",
            "elements": [{"type": "button", "action_id": action, "value": file_id,
                          "text": {"type": "plain_text", "text": _LABELS[action], "emoji": True}}
                         for action in (REROLL, VARY, HD, EDIT)],
        })
    return out


def chain_on(job: Job, thread: Thread | None) -> str | None:
    """The response a turn continues: a button's own point (branching), or the thread's newest answer."""
    if job.options.branch:
        return job.options.chain_on
    return thread.last_response_id if thread else None


def split_mask(job: Job, images: tuple[tuple[str, bytes], ...]
               ) -> tuple[tuple[tuple[str, bytes], ...], tuple[str, bytes] | None]:
    """A masked edit's inputs: the image(s), and the mask (the job's last file)."""
    if job.options.mask and len(images) >= 2:
        return images[:-1], images[-1]
    return images, None


def dimensions(data: bytes) -> tuple[int | None, int | None]:
    """An image's width and height from its header (None, None if Pillow cannot tell)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError, SyntaxError):
        return None, None


def best_quality(model: image_models.ImageModel | None) -> str:
    qualities = model.qualities if model is not None else image_models.QUALITIES
    return max((q for q in qualities if q in _QUALITY_ORDER), key=_QUALITY_ORDER.index, default="high")


def hd_size(model: image_models.ImageModel | None, width: int | None, height: int | None, size: str) -> str:
    """The largest size of the same aspect ratio the model allows (never smaller than the image)."""
    if not width or not height:
        return size
    if model is None or not model.flexible_sizes:
        ratio = width / height
        return "1024x1024" if 0.8 < ratio < 1.25 else "1536x1024" if ratio > 1 else "1024x1536"
    long, short = max(width, height), min(width, height)
    scale = min(model.max_edge / long, math.sqrt(model.max_pixels / (width * height)))
    top = int(long * scale) // 16 * 16
    for big in range(top, 15, -16):  # the largest long side whose rounded short side fits
        small = max(16, round(big * short / long / 16) * 16)
        candidate = f"{big}x{small}" if width >= height else f"{small}x{big}"
        if image_models.size_problem(model, candidate) is None:
            return candidate if big * small >= width * height else f"{width}x{height}"
    return size


def hd_tool(tool: dict[str, Any], table: image_models.ModelTable, width: int | None, height: int | None
            ) -> dict[str, Any]:
    """The image tool of an HD click: the image's own, at the model's best quality and largest size."""
    model = table.get(str(tool.get("model") or ""))
    return {**tool, "quality": best_quality(model), "action": "edit",
            "size": hd_size(model, width, height, str(tool.get("size") or "auto"))}
