"""Composition root: builds every piece from `Settings` and runs Easel (HTTP mode or Socket Mode).

Nothing else in the code base builds clients, apps or stores; everything receives them. The process that
answers Slack builds only its half (`build_intake`): it never imports the OpenAI side, which is the largest
part of a process's memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.publishing import SlackPublisher, retry_handlers
from bot.service import Intake
from handlers import register_handlers
from handlers.payloads import Context
from storage import Store, open_store

if TYPE_CHECKING:
    import openai

    from bot.pacing import Clock
    from bot.worker import Worker

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
READY_LINE = "easel-worker-ready"
# Images pass through buffers of a few megabytes. Below the mmap threshold glibc serves them from its heaps,
# where they are reused; above it each one is a fresh mapping, faulted in page by page and handed back when
# freed. Measured in the benchmark: with a 256 KB threshold (so that every 256 KB socket read was a fresh
# mapping) the worker spent about a third more CPU per image, for no lower peak memory than with 8 MB. The
# trim threshold keeps up to 64 MB of freed heap for the next image instead of returning it to the system
# and faulting it in again (it does not raise the peak). Fixed values also keep glibc from moving them on
# its own; two arenas keep the heaps few.
WORKER_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "8388608",
    "MALLOC_TRIM_THRESHOLD_": "67108864",
    "MALLOC_ARENA_MAX": "2",
}


@dataclasses.dataclass
class Easel:
    settings: Settings
    store: Store
    bolt: AsyncApp
    slack: SlackPublisher
    worker: Worker | None = None  # None in the process that only answers Slack
    openai_client: openai.AsyncOpenAI | None = None
    socket_connected: Callable[[], Awaitable[bool]] | None = None

    async def close(self) -> None:
        await self.slack.close()
        if self.openai_client is not None:
            await self.openai_client.close()
        await self.store.close()


def openai_client(settings: Settings) -> openai.AsyncOpenAI:
    """Image turns take minutes: the read time-out is the gap allowed between two stream events.

    The SDK's aiohttp transport (its `aiohttp` extra) reads the multi-megabyte event streams with aiohttp's
    C parser; measured here it costs about a fifth less CPU per image than the default transport. Its
    session is given a small read buffer: when hundreds of answers arrive at once, each stream holds
    at most a few tens of kilobytes until it is read, instead of a quarter of a megabyte (measured with
    200 answers of 2 MB finishing together: 50 MB more memory at the peak instead of 120 MB)."""
    import openai

    from bot.pacing import no_sdk_retry_on_429

    timeout = openai.Timeout(settings.openai_timeout, connect=10.0)
    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        timeout=timeout,
        max_retries=settings.openai_max_retries,
        http_client=openai.DefaultAioHttpClient(timeout=timeout, event_hooks={"response": [no_sdk_retry_on_429]},
                                                **_small_buffer_transport()),
    )


def _small_buffer_transport() -> dict[str, Any]:
    """The SDK's own aiohttp transport over a session with a 16 KB read buffer (the transport reads in 16 KB
    pieces anyway), and no connection cap of its own (MAX_CONCURRENT_GENERATIONS is the cap). The transport
    class lives in the SDK's vendored package: if a later SDK moves it, its default session is used."""
    try:
        from openai._vendor.httpx_aiohttp.transport import AiohttpTransport
    except ImportError:  # pragma: no cover - depends on the SDK's layout
        log.warning("the openai SDK's aiohttp transport moved; using its default read buffer")
        return {}

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), read_bufsize=16 * 1024)

    return {"transport": AiohttpTransport(client=session)}


class _WithoutClientWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment and then warns that the client it was given wins. Easel
    gives that client (the same token, with Easel's retry policy and connection pool) on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("slack_bolt")
    if not any(isinstance(f, _WithoutClientWarning) for f in logger.filters):
        logger.addFilter(_WithoutClientWarning())
    return logger


async def build_intake(settings: Settings, *, wake: Callable[[], None]) -> Easel:
    """The half that answers Slack: store, Web API client, Bolt app and listeners. `wake` tells the worker
    (in another process, or built by `build`) that a job is waiting."""
    store = await open_store(settings.database_url)
    # One connection pool for every Slack call (slack_sdk otherwise opens a new session per call).
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120, sock_connect=10))
    web_client = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=retry_handlers(),
        session=http,
    )
    bolt = AsyncApp(
        client=web_client,
        signing_secret=settings.slack_signing_secret,
        request_verification_enabled=not settings.socket_mode,
        # The listeners only store a job (milliseconds), and it must be stored before Slack hears "ok".
        process_before_response=True,
        logger=_bolt_logger(),
    )
    intake = Intake(store=store, wake=wake, max_pending_per_user=settings.max_queued_per_user)
    register_handlers(bolt, intake=intake, ctx=Context(defaults=settings.image_defaults(),
                                                       table=settings.model_table()))
    return Easel(settings=settings, store=store, bolt=bolt, slack=SlackPublisher(web_client, session=http))


async def build(settings: Settings, *, clock: Clock | None = None) -> Easel:
    """Everything, in this process: the intake and the worker that runs its jobs (the worker process, and
    tests, which run both in one process). `clock` is the pacer's (tests drive their own)."""
    from bot.imaging import OpenAIImages, PayloadSlots
    from bot.jobs import JobRunner
    from bot.pacing import Pacer
    from bot.worker import Worker
    from storage.limits import Limits

    built: list[Worker] = []

    def wake() -> None:
        for worker in built:
            worker.wake()

    easel = await build_intake(settings, wake=wake)
    client = openai_client(settings)
    pacing = Pacer(Limits(easel.store), per_minute=settings.openai_images_per_minute, clock=clock)
    images = OpenAIImages(client, model=settings.openai_model, slots=PayloadSlots(settings.max_images_in_memory),
                          deadline=max(settings.openai_timeout * 2, 30.0), pacing=pacing)
    images.warm_up()
    runner = JobRunner(store=easel.store, images=images, slack=easel.slack,
                       capacity=settings.max_concurrent_generations, pacing=pacing)
    worker = Worker(
        store=easel.store, runner=runner, max_generations=settings.max_concurrent_generations,
        lease=settings.job_lease_seconds, poll=settings.worker_poll_seconds, pacing=pacing,
    )
    runner.free_slots = worker.free_generation_slots
    built.append(worker)
    easel.worker, easel.openai_client = worker, client
    return easel


def web_app(easel: Easel, *, events: bool = True, worker: WorkerProcess | None = None) -> web.Application:
    """The HTTP side: Slack's requests (HTTP mode) and the readiness check."""
    if events:
        app = easel.bolt.web_app(path=EVENTS_PATH)
        app.middlewares.append(_malformed_requests(easel.settings))
    else:
        app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        mode = "socket" if easel.settings.socket_mode else "http"
        try:
            await asyncio.wait_for(easel.store.ping(), 5)
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            return web.json_response({"ok": False, "mode": mode, "error": type(e).__name__}, status=503)
        if easel.socket_connected is not None and not await easel.socket_connected():
            return web.json_response({"ok": False, "mode": mode, "error": "socket not connected"}, status=503)
        if worker is not None and not worker.alive:
            return web.json_response({"ok": False, "mode": mode, "error": "worker not running"}, status=503)
        if worker is not None and not worker.ready:
            return web.json_response({"ok": False, "mode": mode, "error": "worker starting"}, status=503)
        return web.json_response({"ok": True, "mode": mode})

    app.router.add_get(HEALTH_PATH, healthz)
    return app


async def serve(settings: Settings, *, stop: asyncio.Event, host: str = "0.0.0.0") -> None:
    """`python -m bot`: this process answers Slack; a child process (`python -m bot worker`) runs the jobs.

    Acknowledging Slack within its three seconds must never wait behind image work: decoding, uploading and
    database bookkeeping for hundreds of images would otherwise share one event loop (and one core) with the
    listeners. The two processes share only the database; new jobs are signalled to the worker through its
    standard input, and the worker also polls, so nothing depends on that signal arriving.
    """
    worker = WorkerProcess(settings)
    easel = await build_intake(settings, wake=worker.wake)
    await easel.store.warm_up()
    runner = web.AppRunner(web_app(easel, events=not settings.socket_mode, worker=worker), access_log=None)
    await runner.setup()
    socket_handler = None
    connecting: asyncio.Task[None] | None = None
    try:
        await worker.start()
        await web.TCPSite(runner, host, settings.port).start()
        if settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            socket_handler = AsyncSocketModeHandler(easel.bolt, settings.slack_app_token)
            easel.socket_connected = socket_handler.client.is_connected
            # slack_sdk retries a refused connection forever: connect in a task so SIGTERM still stops us.
            connecting = asyncio.create_task(socket_handler.connect_async(), name="easel-socket-connect")
            log.info("Easel is starting in Socket Mode (health on :%d%s)", settings.port, HEALTH_PATH)
        else:
            log.info("Easel is up: Slack requests at :%d%s", settings.port, EVENTS_PATH)
        await stop.wait()
        log.info("stopping: the worker gets %.0f s for running jobs", settings.shutdown_grace_seconds)
        await worker.stop()  # requests that arrive meanwhile are still stored, for the next start
        if socket_handler is not None:
            await socket_handler.close_async()
        if connecting is not None and not connecting.done():
            connecting.cancel()
    finally:
        await worker.kill()
        await runner.cleanup()
        await easel.close()


async def run_worker(settings: Settings, *, stop: asyncio.Event, wakeups: bool = False) -> None:
    """`python -m bot worker`: run jobs until `stop` is set, then stop gracefully. With `wakeups`, standard
    input is the parent's pipe: each byte says "new job", and its end means the parent is gone."""
    easel = await build(settings)
    assert easel.worker is not None
    await easel.store.warm_up()
    follower = asyncio.create_task(_follow_wakeups(easel.worker.wake, stop)) if wakeups else None
    try:
        if easel.store.dialect == "sqlite":
            released = await easel.store.release_all()  # one worker per SQLite file: leftovers are ours
            if released:
                log.info("picked up %d unfinished job(s) from the last run", released)
        easel.worker.start()
        log.info("worker %s is running", easel.worker.worker_id)
        if wakeups:  # tell the parent, whose readiness check waits for this line
            sys.stdout.write(f"{READY_LINE}\n")
            sys.stdout.flush()
        await stop.wait()
        log.info("worker stopping: running jobs get %.0f s", settings.shutdown_grace_seconds)
        await easel.worker.stop(settings.shutdown_grace_seconds)
    finally:
        if follower is not None:
            follower.cancel()
        await easel.close()


async def _follow_wakeups(wake: Callable[[], None], stop: asyncio.Event) -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        wake()
    log.warning("the parent process is gone; stopping")
    stop.set()


def _malformed_requests(settings: Settings) -> Any:
    """Bolt builds its request object before checking the signature, and a payload of the wrong shape (say
    `"channel": false`) makes that raise, which aiohttp would answer with a 500. Answer 401 when the request
    is not from Slack and 400 when it is but cannot be read; never a 5xx."""
    assert settings.slack_signing_secret, "HTTP mode always has a signing secret"
    verifier = SignatureVerifier(settings.slack_signing_secret)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as e:  # noqa: BLE001 - the point is that nothing escapes as a 500
            try:
                signed = verifier.is_valid(
                    body=await request.read(),
                    timestamp=request.headers.get("X-Slack-Request-Timestamp", ""),
                    signature=request.headers.get("X-Slack-Signature", ""),
                )
            except ValueError:  # a timestamp that is not a number
                signed = False
            log.warning("unreadable %s request to %s: %s", "signed" if signed else "unsigned", request.path,
                        type(e).__name__)
            return web.json_response({"error": "malformed request" if signed else "invalid request"},
                                     status=400 if signed else 401)

    return middleware


class WorkerProcess:
    """The child process that runs jobs: started, woken, restarted if it dies, stopped with SIGTERM."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = False  # the worker said it is running jobs

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        env = {
            **WORKER_MALLOC,
            **os.environ,
            "EASEL_PARENT_PID": str(os.getpid()),
        }
        self.ready = False
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "worker", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self._watch = asyncio.create_task(self._watch_exit(self._proc), name="easel-worker-watch")

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():  # the worker prints one line, when it is running
            if line.strip() == READY_LINE.encode():
                self.ready = True
        code = await proc.wait()
        self.ready = False
        if self._stopping:
            return
        log.error("the worker process exited (code %s); starting a new one", code)
        await asyncio.sleep(1.0)
        if not self._stopping:
            await self.start()

    def wake(self) -> None:
        """Best effort (the worker polls too): one byte down the pipe."""
        if self.alive and self._proc is not None and self._proc.stdin is not None:
            transport = self._proc.stdin.transport
            if not transport.is_closing() and transport.get_write_buffer_size() < 4096:
                self._proc.stdin.write(b"w")

    async def stop(self) -> None:
        self._stopping = True
        if self.alive and self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), self._settings.shutdown_grace_seconds + 15)
            except TimeoutError:
                log.error("the worker did not stop in time; killing it")

    async def kill(self) -> None:
        self._stopping = True
        if self.alive and self._proc is not None:
            self._proc.kill()
            await self._proc.wait()
        if self._watch is not None:
            self._watch.cancel()
