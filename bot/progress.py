"""Live progress: a generation's status message while it draws.

The job's one status message (the one that told its place in the queue, or one posted when its turn came)
says "drawing" with the model, quality and size, the time so far and an estimate of the time left: the median
of the recent generations with the same model, quality and size in this deployment (`Estimates`), not a
constant. It is rewritten at most every `PROGRESS_EVERY` seconds, and only as a cosmetic call (one that finds
the workspace's Slack budget spent is skipped; the next one shows the news). Partial images (PREVIEW_IMAGES)
show in it as they arrive; a preview that comes after the final image (OpenAI may send them late) is dropped,
and the preview files are deleted once the answer is in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from bot import messages
from bot.slack import SlackAdapter, sniff
from bot.slack_budget import CURRENT_TEAM

log = logging.getLogger(__name__)

PROGRESS_EVERY = 5.0  # seconds between two rewrites of a status message, at least
PREVIEWS_AT_ONCE = 4  # previews being decoded and uploaded at once in this process (each is an image's size)
RECENT = 20  # generations the estimate is the median of
FRESH_FOR = 30.0  # seconds a model's recent durations are used before they are read again


class Durations(Protocol):
    async def recent_durations(self, image_model: str, *, limit: int) -> Sequence[tuple[Mapping[str, Any], int]]:
        ...


class Estimates:
    """How long a generation usually takes with this model, quality and size: the median of the last `RECENT`
    posted ones (seconds), None when there were none yet."""

    def __init__(self, durations: Durations, *, clock: Callable[[], float] = time.monotonic):
        self._durations = durations
        self._clock = clock
        self._seen: dict[str, tuple[float, Sequence[tuple[Mapping[str, Any], int]]]] = {}

    async def typical(self, model: str, quality: str, size: str) -> float | None:
        seen = self._seen.get(model)
        if seen is None or self._clock() - seen[0] > FRESH_FOR:
            try:
                rows = await self._durations.recent_durations(model, limit=5 * RECENT)
            except Exception as e:  # noqa: BLE001 - a status without an estimate is still a status
                log.warning("could not read recent generation times: %s", type(e).__name__)
                rows = seen[1] if seen else ()
            seen = self._seen[model] = (self._clock(), rows)
        same = [ms for options, ms in seen[1]
                if str(options.get("quality") or "auto") == quality and str(options.get("size") or "auto") == size]
        return statistics.median(same[:RECENT]) / 1000 if same else None

    def learned(self, model: str) -> None:
        """A generation with `model` was recorded here: the next estimate reads them again."""
        self._seen.pop(model, None)


@dataclasses.dataclass
class Drawing:
    """One generation drawing in this process, as its status message shows it."""

    job_id: int
    team_id: str
    channel: str
    ts: str
    model: str
    quality: str
    size: str
    typical: float | None
    started: float
    text: str = ""  # what the message says now
    rewritten: float = 0.0  # when it was last rewritten
    preview: str | None = None  # the file id of the preview it shows
    previews: list[str] = dataclasses.field(default_factory=list)  # every preview file uploaded
    final: bool = False  # the final image is in: no preview may follow it
    thinking: bool = False  # the image has not begun yet (the stream says when it does)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class Progress:
    def __init__(self, *, slack: SlackAdapter, estimates: Estimates, every: float = PROGRESS_EVERY,
                 clock: Callable[[], float] = time.monotonic):
        self._slack = slack
        self._estimates = estimates
        self._every = every
        self._clock = clock
        self._drawing: dict[int, Drawing] = {}
        self._previewing = 0  # previews being uploaded now
        self._soon: set[asyncio.Task[None]] = set()  # rewrites started by news from a stream
        self.changed = asyncio.Event()  # something began drawing here (the ticker has work)

    @property
    def active(self) -> bool:
        return bool(self._drawing)

    async def begin(self, *, job_id: int, team_id: str, channel: str, ts: str, tool: Mapping[str, Any],
                    thinking: bool = False) -> Drawing:
        """A generation's turn starts, its status message at `ts`: it says so at once (as a cosmetic update:
        without a token it waits for the next tick). `thinking`: it says "working on it" until `began_image`
        (the model may refine the prompt first, or answer in words); else "drawing" from the start."""
        model = str(tool.get("model") or "unknown")
        quality, size = str(tool.get("quality") or "auto"), str(tool.get("size") or "auto")
        drawing = Drawing(job_id=job_id, team_id=team_id, channel=channel, ts=ts, model=model, quality=quality,
                          size=size, typical=await self._estimates.typical(model, quality, size),
                          started=self._clock(), thinking=thinking)
        self._drawing[job_id] = drawing
        self.changed.set()
        await self._rewrite(drawing)
        return drawing

    def began_image(self, job_id: int) -> None:
        """The stream says the image has begun: the status message says "drawing" now (a cosmetic rewrite,
        started here: called from the stream's reading, which does not wait for Slack)."""
        d = self._drawing.get(job_id)
        if d is None or not d.thinking:
            return
        d.thinking = False
        task = asyncio.ensure_future(self._rewrite(d))  # (this task's context: the job's workspace and token)
        self._soon.add(task)
        task.add_done_callback(self._soon.discard)

    def _text(self, d: Drawing) -> str:
        return messages.drawing(model=d.model, quality=d.quality, size=d.size,
                                elapsed=self._clock() - d.started, typical=d.typical,
                                preview=d.preview is not None, thinking=d.thinking)

    def _blocks(self, d: Drawing, text: str) -> list[dict[str, Any]] | None:
        if d.preview is None:
            return None
        return [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "image", "slack_file": {"id": d.preview}, "alt_text": "A preview of the image being drawn"}]

    async def _rewrite(self, d: Drawing, *, force: bool = False) -> None:
        async with d.lock:
            if d.final:
                return
            text = self._text(d)
            if text == d.text and not force:
                return
            token = CURRENT_TEAM.set(d.team_id)
            try:
                if await self._slack.update(d.channel, d.ts, text, blocks=self._blocks(d, text)):
                    d.text, d.rewritten = text, self._clock()
            finally:
                CURRENT_TEAM.reset(token)

    async def tick(self) -> None:
        """Rewrite the status messages due (the longest unchanged first, so a thin budget goes round), each
        with its workspace's token."""
        due = [d for d in self._drawing.values() if not d.final and self._clock() - d.rewritten >= self._every]
        for d in sorted(due, key=lambda d: d.rewritten):
            try:
                await self._slack.use_team(d.team_id)
            except Exception as e:  # noqa: BLE001 - (uninstalled meanwhile: its job ends on its own)
                log.info("job %s: no token for its status message: %s", d.job_id, type(e).__name__)
                continue
            await self._rewrite(d)

    async def preview(self, d: Drawing, index: int, data: bytes) -> str | None:
        """A partial image arrived: upload it (privately: it is shown only in the status message) and show it,
        unless the final image is in already or the workspace's budget has nothing to spare. Returns the
        preview's file id if one was uploaded (the caller records it, to be deleted)."""
        if d.final:
            return None
        kind = sniff(data)
        name = f"easel-{d.job_id}-preview-{index + 1}.{'png' if kind is None else kind.split('/')[1]}"
        token = CURRENT_TEAM.set(d.team_id)
        try:
            file_id = await self._slack.upload_preview(data=data, filename=name)
            if file_id is None:
                return None
            d.previews.append(file_id)
            async with d.lock:
                if d.final:  # the final came while the preview went up: it is not shown
                    return file_id
                d.preview = file_id
            await self._rewrite(d, force=True)
            return file_id
        finally:
            CURRENT_TEAM.reset(token)

    def previews(self, d: Drawing, *, before: Callable[[], Awaitable[None]],
                 on_file: Callable[[str], Awaitable[None]]) -> JobPreviews:
        """What hears a turn's partial images for `d`: `before()` runs before each is uploaded (it raises if the
        job is no longer this run's), `on_file(file_id)` records each preview uploaded."""
        return JobPreviews(self, d, before=before, on_file=on_file)

    def learned(self, model: str) -> None:
        """A generation with `model` was recorded (its time counts in the estimates from now on)."""
        self._estimates.learned(model)

    async def forget(self, file_id: str) -> None:
        await self._slack.delete_file(file_id)

    def final(self, job_id: int) -> None:
        """The final image is in: no preview or rewrite starts from now on."""
        d = self._drawing.get(job_id)
        if d is not None:
            d.final = True

    async def finished(self, job_id: int) -> Drawing | None:
        """The answer is in: no preview or rewrite follows, and none is still on its way (one under way is
        waited for). The drawing, if one was here."""
        d = self._drawing.pop(job_id, None)
        if d is not None:
            d.final = True
            async with d.lock:
                pass
        return d

    async def run(self, stopping: asyncio.Event) -> None:
        """Rewrite the status messages every `every` seconds while anything draws here."""
        while not stopping.is_set():
            if not self._drawing:
                self.changed.clear()
                waiter = asyncio.create_task(self.changed.wait())
                stop = asyncio.create_task(stopping.wait())
                await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stop.cancel()
                continue
            stop = asyncio.create_task(stopping.wait())
            await asyncio.wait({stop}, timeout=self._every)
            stop.cancel()
            try:
                await self.tick()
            except Exception:
                log.exception("updating status messages failed")


class JobPreviews:
    """One turn's partial images, shown in its status message: one at a time, a few at once in this process,
    none once the final image is in (`imaging.Previews`)."""

    def __init__(self, progress: Progress, drawing: Drawing, *, before: Callable[[], Awaitable[None]],
                 on_file: Callable[[str], Awaitable[None]]):
        self._progress = progress
        self._drawing = drawing
        self._before = before
        self._on_file = on_file
        self._task: asyncio.Task[None] | None = None

    def wanted(self) -> bool:
        busy = self._task is not None and not self._task.done()
        return not self._drawing.final and not busy and self._progress._previewing < PREVIEWS_AT_ONCE

    def arrived(self, index: int, data: bytes) -> None:
        if not self.wanted():
            return
        self._progress._previewing += 1
        self._task = asyncio.create_task(self._show(index, data))

    async def _show(self, index: int, data: bytes) -> None:
        try:
            await self._before()
            file_id = await self._progress.preview(self._drawing, index, data)
            del data
            if file_id is not None:
                try:
                    await self._on_file(file_id)
                except Exception:
                    await self._progress.forget(file_id)  # not recorded: nothing would delete it later
                    raise
        except Exception as e:  # noqa: BLE001 - a preview is never worth a job
            log.warning("job %s: a preview failed: %s", self._drawing.job_id, type(e).__name__)
        finally:
            self._progress._previewing -= 1

    async def settle(self) -> None:
        """Wait for a preview still on its way (its file must be known, to be deleted)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
