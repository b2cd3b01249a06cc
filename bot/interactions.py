"""What the button, modal and shortcut listeners need besides the payload: Easel's record of an image, the
claim that makes a double click one job, a mask checked before anything goes to OpenAI, and the Slack calls
a listener makes (the modal, a private refusal)."""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from bot import limits
from bot.slack import DownloadError, NotInstalled, SlackAdapter
from storage import Store
from storage.models import Generation

log = logging.getLogger(__name__)

# A modal's answer is due within Slack's 3 seconds: the mask is read in 2 at most.
MASK_PACE = limits.Pace(grace=1.0, read_gap=2.0, total=2.0, deadline=2.0)
MASK_NOT_PNG = "The mask must be a PNG file. Export it as PNG (with transparency) and attach it again."
MASK_NO_ALPHA = ("The mask has no transparency. Make the parts to change transparent (an alpha channel) "
                 "and keep the rest opaque, then attach it again.")
MASK_UNREADABLE = "Easel could not read the mask ({reason}). Attach it again, as a PNG with transparency."


def mask_size(width: int, height: int, want: tuple[int, int]) -> str:
    return (f"The mask is {width}x{height} pixels but the image is {want[0]}x{want[1]}. Make the mask exactly "
            f"the image's size, then attach it again.")


def mask_problem(data: bytes, size: tuple[int, int] | None) -> str | None:
    """Why `data` cannot be the mask of an image of `size` (a sentence for the modal), or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                return MASK_NOT_PNG
            has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
            if not has_alpha:
                return MASK_NO_ALPHA
            if size is not None and image.size != tuple(size):
                return mask_size(image.width, image.height, size)
    except UnidentifiedImageError:
        return MASK_NOT_PNG
    except (OSError, ValueError, SyntaxError) as e:
        return MASK_UNREADABLE.format(reason=type(e).__name__)
    return None


class Interactions:
    def __init__(self, *, store: Store, slack: SlackAdapter):
        self._store = store
        self._slack = slack

    async def image(self, *, team_id: str, channel_id: str, file_id: str) -> Generation | None:
        """The image Easel posted as `file_id` in this workspace and channel (None: not one of Easel's there)."""
        return await self._store.generations.posted(team_id=team_id, channel_id=channel_id, slack_file_id=file_id)

    async def claim(self, base: str, *, at: float) -> bool:
        """A click, claimed: False when the same person clicked the same button less than 2 s before."""
        return await self._store.clicks.claim(base, at=at, now=time.time())

    async def mask(self, *, team_id: str, file: dict[str, Any], size: tuple[int, int] | None) -> str | None:
        """Download a mask a person attached in the modal and say what is wrong with it (None: it is fine)."""
        url = file.get("url_private_download") or file.get("url_private")
        if not isinstance(url, str):
            return MASK_UNREADABLE.format(reason="Slack gave no address for it")
        if file.get("mimetype") not in (None, "image/png") and file.get("filetype") not in (None, "png"):
            return MASK_NOT_PNG
        where = Path(tempfile.mkdtemp(prefix="easel-mask-"))
        try:
            await self._slack.use_team(team_id)
            await self._slack.download(url, where / "mask", limit=limits.MAX_IMAGE_BYTES, pace=MASK_PACE)
            return mask_problem((where / "mask").read_bytes(), size)
        except NotInstalled:
            return MASK_UNREADABLE.format(reason="Easel is not installed in this workspace")
        except DownloadError as e:
            return MASK_UNREADABLE.format(reason=str(e).rstrip("."))
        finally:
            shutil.rmtree(where, ignore_errors=True)
