"""`python -m bot console`: Easel in a terminal, with nothing but an OpenAI key.

Each line typed is a request through the same path a Slack message takes: parsed by `handlers.payloads` as a
direct message (flags and all), stored as a job, run by the same worker and job runner against the same
OpenAI side, in an embedded SQLite database. Only the publishing end differs: `ConsolePublisher` writes each
image under the output folder (with the prompt the model used beside it) and prints what Easel would have
posted. The first line starts a thread; every later line is a reply in it, so it edits the last image.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from bot import messages
from bot.config import Settings
from bot.imaging import OpenAIImages, PayloadSlots
from bot.inputs import Inputs
from bot.intake import Intake
from bot.jobs import JobRunner
from bot.metrics import Metrics
from bot.queue_status import Slots
from bot.slack import EXTENSIONS, sniff
from bot.slack_budget import Priority
from bot.worker import Worker
from handlers import payloads
from storage import Store, open_store
from storage.models import Job, JobKind, JobStatus

TEAM, CHANNEL, USER = "T0CONSOLE", "D0CONSOLE", "U0CONSOLE"
DEFAULT_OUT = "easel-out"
_MARKUP = re.compile(r"(?<![\w*_])([*_])(\S(?:.*?\S)?)\1(?![\w*_])")  # *bold*, _italics_


def _plain(text: str) -> str:
    """Slack's markup, for a terminal: no emoji codes, no bold or italics markers."""
    for code, sign in ((":information_source: ", "note: "), (":warning: ", "! "), (":art: ", ""),
                       (":hourglass: ", "")):
        text = text.replace(code, sign)
    return _MARKUP.sub(r"\2", text)


def _shown(path: Path) -> str:
    """A path as the person would type it: relative to where they are, when it is below."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class ConsolePublisher:
    """The Slack side of the job runner, for a terminal: posts are printed, images are files."""

    def __init__(self, out_dir: Path, *, stream: TextIO, interactive: bool):
        self._out = out_dir
        self._stream = stream
        self._interactive = interactive
        self._ts = (f"{int(time.time())}.{n:06d}" for n in itertools.count(1))
        self._ticker: asyncio.Task[None] | None = None
        self.estimate: float | None = None  # seconds, from earlier generations like this one
        self.saved: list[Path] = []

    def _say(self, text: str) -> None:
        self._stop_ticker()
        print(text, file=self._stream, flush=True)

    def next_ts(self) -> str:
        return next(self._ts)

    async def close(self) -> None:
        self._stop_ticker()

    async def use_team(self, team_id: str) -> None:
        return None  # one terminal, one "workspace"

    async def is_workspace_admin(self, user_id: str) -> bool:
        return False  # the console's one person started every thread it has

    async def post(self, channel: str, thread_ts: str | None, text: str, *, tag: Any = None,
                   posted: dict[int, str] | None = None, priority: Priority = Priority.RESULT,
                   blocks: Any = None) -> list[str]:
        if priority > Priority.RESULT:
            return []  # a status message: the terminal's own progress line says it (see `_tick`)
        self._say(_plain(text))
        return [self.next_ts()]

    async def tagged(self, channel: str, thread_ts: str | None, tag: Any, *, since: float) -> dict[int, str]:
        return {}  # what a terminal printed cannot be looked up: a resumed request says it again

    async def respond(self, response_url: str, text: str) -> None:
        self._say(_plain(text))

    async def update(self, channel: str, ts: str, text: str, *, blocks: Any = None,
                     priority: Priority = Priority.COSMETIC) -> bool:
        self._say(_plain(text))
        return True

    async def delete(self, channel: str, ts: str, *, wait: bool = True) -> bool:
        return True

    async def delete_file(self, file_id: str, *, wait: bool = True) -> bool:
        return True

    async def upload_preview(self, *, data: bytes, filename: str) -> str | None:
        return None  # previews are not asked for in a terminal

    async def react(self, channel: str, ts: str, name: str = messages.WORKING_REACTION, *,
                    priority: Priority = Priority.SIGN) -> bool:
        if name == messages.WORKING_REACTION and self._ticker is None:
            self._ticker = asyncio.create_task(self._tick())
        return True

    async def unreact(self, channel: str, ts: str, name: str = messages.WORKING_REACTION, *,
                      wait: bool = True) -> bool:
        self._stop_ticker()
        return True

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
            if self._interactive:
                print("\r\033[K", end="", file=self._stream, flush=True)

    async def _tick(self) -> None:
        """Progress while drawing: the time so far and, when earlier generations tell, about how long it takes.
        On a terminal one line rewritten every second; piped, one line at the start."""
        began = time.monotonic()
        about = f" (usually about {self.estimate:.0f} s)" if self.estimate else ""
        if not self._interactive:
            print(f"drawing...{about}", file=self._stream, flush=True)
            return
        while True:
            print(f"\rdrawing... {time.monotonic() - began:.0f} s{about}\033[K", end="", file=self._stream,
                  flush=True)
            await asyncio.sleep(1.0)

    async def prepare(self, *, data: bytes, filename: str, on_stage: Any = None) -> str:
        return str(await asyncio.to_thread(self._write, data, filename))

    async def upload(self, *, data: bytes, filename: str, comment: str, prepared: Any = None, **_: Any) -> str:
        path = Path(await prepared) if prepared is not None else await asyncio.to_thread(self._write, data, filename)
        note = path.with_suffix(path.suffix + ".txt")
        await asyncio.to_thread(note.write_text, _plain(comment) + "\n", encoding="utf-8")
        self._say(f"{_plain(comment)}\nsaved {_shown(path)}")
        self.saved.append(path)
        return str(path)

    def _write(self, data: bytes, filename: str) -> Path:
        kind = EXTENSIONS.get(sniff(data) or "", Path(filename).suffix.lstrip(".") or "png")
        path = self._out / f"{Path(filename).stem}.{kind}"
        path.write_bytes(data)
        return path

    async def file_url(self, file_id: str) -> str:
        return file_id  # the path an image was saved at

    async def download(self, url: str, dest: Path, *, limit: int, pace: Any = None) -> int:
        """An image saved earlier (the thread's last one, when OpenAI has forgotten the chain), copied."""
        data = await asyncio.to_thread(Path(url).read_bytes)
        await asyncio.to_thread(dest.write_bytes, data[:limit])
        return min(len(data), limit)


class Console:
    """One console session: a thread of requests, each run to its end before the next line is read."""

    def __init__(self, *, store: Store, intake: Intake, publisher: ConsolePublisher, worker: Worker,
                 settings: Settings):
        self._store = store
        self._intake = intake
        self._publisher = publisher
        self._worker = worker
        self._ctx = payloads.Context(defaults=settings.image_defaults(), table=settings.model_table())
        self._thread_ts: str | None = None

    async def ask(self, line: str) -> Job | None:
        """Run one request (or a follow-up in this session's thread); the job as it ended, or None when the
        line asked nothing (an empty one)."""
        ts = self._publisher.next_ts()
        event = {"type": "message", "channel": CHANNEL, "channel_type": "im", "user": USER, "ts": ts,
                 "text": line}
        thread = None
        if self._thread_ts is not None:
            event["thread_ts"] = self._thread_ts
            thread = await self._intake.thread(team_id=TEAM, channel_id=CHANNEL, thread_ts=self._thread_ts)
        routed = payloads.route_event(event, team_id=TEAM, bot_user_id=None, thread=thread, ctx=self._ctx)
        if routed is None:
            return None
        self._publisher.estimate = await self._estimate(routed.job.options.tool)
        await self._intake.submit(routed.job, start_thread=routed.start_thread,
                                  thread_options=routed.thread_options)
        job = await self._finished(routed.job.dedupe_key)
        if routed.start_thread and job is not None and job.status is JobStatus.DONE and job.kind is JobKind.GENERATE:
            self._thread_ts = ts  # later lines continue this thread (the same chain of responses)
        return job

    async def _finished(self, dedupe_key: str) -> Job | None:
        while True:
            found = [j for j in await self._store.jobs.all() if j.dedupe_key == dedupe_key]
            if found and found[0].status in (JobStatus.DONE, JobStatus.FAILED) and self._worker.busy == 0:
                return found[0]
            if not found:
                return None  # refused before it became a job (a cap, say): already said
            await asyncio.sleep(0.1)

    async def _estimate(self, tool: dict[str, Any]) -> float | None:
        """The median time of the last generations with the same image model, quality and size."""
        same = [g["generation_ms"] for g in await self._store.generations.all()
                if g["status"] == "posted" and g["generation_ms"]
                and all((g["options"] or {}).get(k) == tool.get(k) for k in ("model", "quality", "size"))]
        return statistics.median(same[-9:]) / 1000 if same else None


def _arguments(argv: list[str]) -> tuple[Path, str]:
    """`[--out DIR] [PROMPT WORDS AND FLAGS...]`."""
    out, rest = Path(DEFAULT_OUT), []
    words = iter(argv)
    for word in words:
        if word == "--out":
            out = Path(next(words, DEFAULT_OUT))
        elif word.startswith("--out="):
            out = Path(word.removeprefix("--out="))
        else:
            rest.append(word)
    return out, " ".join(rest)


async def run(settings: Settings, argv: list[str], *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """The console: one request from the arguments, or one per line of standard input until its end."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    out_dir, once = _arguments(argv)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A database of the console's own: a Slack deployment's worker must never pick up a console request.
    store = await open_store(f"sqlite:///{(out_dir / 'easel-console.db').resolve()}")
    from bot.openai_client import openai_client

    client = openai_client(settings)
    interactive = stdin.isatty() and stdout.isatty()
    publisher = ConsolePublisher(out_dir.resolve(), stream=stdout, interactive=interactive)
    images = OpenAIImages(client, model=settings.openai_model, slots=PayloadSlots(settings.max_images_in_memory),
                          deadline=max(settings.openai_timeout * 2, 30.0))
    metrics = Metrics()
    attachments = Inputs(publisher)  # type: ignore[arg-type]
    slots = Slots(settings.max_concurrent_generations)
    runner = JobRunner(store=store, images=images, slack=publisher,  # type: ignore[arg-type]
                       capacity=settings.max_concurrent_generations, slots=slots, metrics=metrics,
                       safety_key=settings.safety_secret(), attachments=attachments,
                       prices=settings.price_table(), buttons=False)
    worker = Worker(store=store, runner=runner, slots=slots,
                    lease=settings.job_lease_seconds, poll=settings.worker_poll_seconds)
    intake = Intake(store=store, wake=worker.wake, max_pending_per_user=settings.max_queued_per_user,
                    metrics=metrics)
    console = Console(store=store, intake=intake, publisher=publisher, worker=worker, settings=settings)
    worker.start()
    try:
        if once:
            job = await console.ask(once)
            return 0 if job is None or job.status is JobStatus.DONE else 1
        if interactive:
            print(f"Easel console: say what to draw; the next line changes it. Images go to {out_dir}/. "
                  "Ctrl-D ends.", file=stdout, flush=True)
        loop = asyncio.get_running_loop()
        while True:
            if interactive:
                print("> ", end="", file=stdout, flush=True)
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                return 0
            if line.strip():
                await console.ask(line.strip())
    finally:
        await worker.stop(grace=0)
        await publisher.close()
        attachments.close()
        await client.close()
        await store.close()
