"""Input images: a message's attachments, downloaded and checked before its job may take a generation slot,
and kept on disk from then until the job reads them.

The worker fetches a job's attachments between its sign of work and its place in the queue, beside (not in)
its generation slots, so a slow download holds up no generation. Each file is streamed to
`<root>/<job id>/`, at most `limits.MAX_IMAGE_BYTES` and `limits.MAX_TOTAL_BYTES` for all, at `limits.Pace`;
then Pillow opens it (PNG, JPEG, WebP or a still GIF only), within `limits.MAX_PIXELS` and its own
decompression-bomb limit, and decodes it whole, so what reaches OpenAI is an image it can read. A manifest
written last marks the set complete. A job that runs where its files are not (another replica noticed it, or
the process restarted) fetches them then, under the same limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from bot import limits, messages
from bot.slack import DownloadError, SlackAdapter, sniff
from storage.models import Job

log = logging.getLogger(__name__)

MIMETYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_MANIFEST = "inputs.json"


class InputRefused(DownloadError):
    """Attachments that cannot be used: str(e) says why; `name` is the file's, when it is about one file."""

    def __init__(self, reason: str, name: str | None = None, *, whole: bool = False):
        super().__init__(reason)
        self.name = name
        self.whole = whole

    @property
    def message(self) -> str:
        """The whole sentence for the thread."""
        return messages.attachment_failed(str(self), self.name, whole=self.whole)


@dataclasses.dataclass(frozen=True)
class Checked:
    mimetype: str
    width: int
    height: int


def check_image(path: Path) -> Checked:
    """Whether the file is an image OpenAI can use. Raises InputRefused saying why not (for the user).

    Pillow reads the header first: a format other than `limits.FORMATS`, more pixels than `limits.MAX_PIXELS`
    (or than Pillow's own bomb limit) and an animated GIF are refused before any decoding. Then the image is
    decoded whole (a JPEG at an eighth of its size, which still reads all its data), which finds a file cut
    short or garbage after a valid header."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=limits.FORMATS) as image:
                width, height = image.size
                if width * height > limits.MAX_PIXELS:
                    raise InputRefused(messages.too_many_pixels(width, height))
                if getattr(image, "is_animated", False):
                    raise InputRefused(messages.ANIMATED)
                fmt = str(image.format)
                if fmt == "JPEG":
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputRefused(messages.FAR_TOO_MANY_PIXELS) from None
        except UnidentifiedImageError:
            raise InputRefused(_not_an_image(path)) from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise InputRefused(messages.DAMAGED) from None
    return Checked(MIMETYPES[fmt], width, height)


def _not_an_image(path: Path) -> str:
    """Why Pillow found no image: a web page (Slack's login page), an image's start with garbage after it, or
    something else altogether."""
    with path.open("rb") as f:
        start = f.read(512)
    if sniff(start) is not None:
        return messages.DAMAGED
    return messages.HTML_INSTEAD if start.lstrip()[:1] == b"<" else messages.NOT_AN_IMAGE


class Inputs:
    """Fetches, checks and keeps jobs' input images under `root` (a directory of this process's own)."""

    def __init__(self, slack: SlackAdapter, *, root: Path | None = None, pace: limits.Pace = limits.PACE,
                 downloads: int = 8):
        self._slack = slack
        self._root = root  # made on first use: a process that never fetches leaves nothing behind
        self._pace = pace
        self._downloads = asyncio.Semaphore(downloads)  # files downloading at once, in this process
        self._checks = asyncio.Semaphore(1)  # images decoding at once (each can take a core and 160 MB)

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="easel-inputs-"))
        return self._root

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def fetched(self, job_id: int) -> bool:
        return (self.root / str(job_id) / _MANIFEST).exists()

    async def fetch(self, job: Job) -> None:
        """Download and check every attachment of `job`. Raises InputRefused, naming the file."""
        where = self.root / str(job.id)
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        kept: list[dict[str, Any]] = []
        total = 0
        try:
            async with asyncio.timeout(self._pace.total):
                for i, f in enumerate(job.files):
                    if i == limits.MAX_IMAGES:
                        raise InputRefused(messages.too_many_attachments(len(job.files)), whole=True)
                    name = str(f.get("name") or f.get("id") or f"file {i + 1}")
                    path = where / str(i)
                    try:
                        total += await self._download(f, path)
                        checked = await self._check(path)
                    except InputRefused as e:
                        e.name = e.name or name
                        raise
                    except DownloadError as e:
                        raise InputRefused(str(e), name) from None
                    if total > limits.MAX_TOTAL_BYTES:
                        raise InputRefused(messages.attachments_too_large(total), whole=True)
                    kept.append({"path": path.name, "mimetype": checked.mimetype})
        except TimeoutError:
            self.discard(job.id)
            raise InputRefused(messages.attachments_too_slow(self._pace.total), whole=True) from None
        except BaseException:
            self.discard(job.id)
            raise
        (where / _MANIFEST).write_text(json.dumps(kept))

    async def load(self, job: Job) -> tuple[tuple[str, bytes], ...]:
        """The job's input images as (mimetype, bytes), read from disk (fetched first if they are not there),
        after which the files are gone: the turn holds them now."""
        if not job.files:
            return ()
        if not self.fetched(job.id):
            await self.fetch(job)
        where = self.root / str(job.id)
        try:
            kept = json.loads((where / _MANIFEST).read_text())
            return tuple((entry["mimetype"], (where / entry["path"]).read_bytes()) for entry in kept)
        finally:
            self.discard(job.id)

    async def one(self, url: str) -> tuple[str, bytes]:
        """One image from a Slack file URL (the thread's last image), checked like an attachment."""
        where = self.root / f"one-{uuid.uuid4().hex}"
        where.mkdir(parents=True)
        try:
            await self._slack_download(url, where / "image", limit=limits.MAX_IMAGE_BYTES)
            checked = await self._check(where / "image")
            return checked.mimetype, (where / "image").read_bytes()
        finally:
            shutil.rmtree(where, ignore_errors=True)

    def discard(self, job_id: int) -> None:
        shutil.rmtree(self.root / str(job_id), ignore_errors=True)

    async def _download(self, f: dict[str, Any], path: Path) -> int:
        url = f.get("url") or await self._slack.file_url(str(f["id"]))
        return await self._slack_download(url, path, limit=limits.MAX_IMAGE_BYTES)

    async def _slack_download(self, url: str, path: Path, *, limit: int) -> int:
        async with self._downloads:
            return await self._slack.download(url, path, limit=limit, pace=self._pace)

    async def _check(self, path: Path) -> Checked:
        async with self._checks:
            return await asyncio.to_thread(check_image, path)

