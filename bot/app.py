"""Composition root: builds every piece from `Settings` and runs Easel (HTTP mode or Socket Mode).

Nothing else in the code base builds clients, apps or stores; everything receives them. The process that
answers Slack builds only its half (`build_intake`): it never imports the OpenAI side, which is the largest
part of a process's memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import errno
import hmac
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot import checks
from bot import metrics as metrics_module
from bot.admins import Admins
from bot.config import Settings
from bot.installs import INSTALL_PATH, REDIRECT_PATH, Installations
from bot.lifecycle import Lifecycle, Refresher
from bot.metrics import Metrics
from bot.models import utc_today
from bot.publishing import SlackPublisher, retry_handlers
from bot.service import Intake
from handlers import register_handlers, shapes
from handlers.payloads import Context
from storage import Store, open_store
from storage.retention import Retention

if TYPE_CHECKING:
    import openai

    from bot.inputs import Inputs
    from bot.pacing import Clock
    from bot.worker import Worker

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
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
    lifecycle: Lifecycle
    worker: Worker | None = None  # None in the process that only answers Slack
    openai_client: openai.AsyncOpenAI | None = None
    socket_connected: Callable[[], Awaitable[bool]] | None = None
    not_ready: str | None = None  # why /healthz says 503 while start-up waits (Slack unreachable, say)
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    refresher: Refresher | None = None  # the worker's reads of OpenAI's model list (started by `run_worker`)
    attachments: Inputs | None = None  # the worker's downloaded input images (on disk)

    async def close(self) -> None:
        if self.refresher is not None:
            await self.refresher.stop()
        if self.attachments is not None:
            self.attachments.close()
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


async def build_intake(
    settings: Settings,
    *,
    wake: Callable[[], None],
    today: Callable[[], datetime.date] = utc_today,
    now: Callable[[], float] = time.monotonic,
) -> Easel:
    """The half that answers Slack: store, Web API client, Bolt app and listeners. `wake` tells the worker
    (in another process, or built by `build`) that a job is waiting. `today` is the date the model table goes
    by; `now` the clock of its reads from the database."""
    try:
        store = await open_store(settings.database_url)
    except (OSError, sa.exc.SQLAlchemyError) as e:
        raise checks.database_error(settings, e) from None
    lifecycle = Lifecycle(table=settings.model_table(today=today), store=store.lifecycle, now=now)
    # One connection pool for every Slack call (slack_sdk otherwise opens a new session per call).
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120, sock_connect=10))
    web_client = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=retry_handlers(),
        session=http,
    )
    installs = _installations(settings, store)
    bolt = AsyncApp(
        client=web_client,
        signing_secret=settings.slack_signing_secret,
        request_verification_enabled=not settings.socket_mode,
        # The listeners only store a job (milliseconds), and it must be stored before Slack hears "ok".
        process_before_response=True,
        logger=_bolt_logger(),
        before_authorize=_WellFormed(admit=installs.admit if installs else None),
        **_oauth(settings, installs),
    )
    metrics = Metrics()
    intake = Intake(store=store, wake=wake, max_pending_per_user=settings.max_queued_per_user, metrics=metrics,
                    lifecycle=lifecycle,
                    forget_workspace=(lambda team: installs.remove(team_id=team)) if installs else None,
                    purge_on_uninstall=settings.purge_on_uninstall)
    register_handlers(bolt, intake=intake, ctx=Context(defaults=settings.image_defaults(), table=lifecycle.table))
    slack = SlackPublisher(web_client, session=http, tokens=installs.token if installs else None)
    return Easel(settings=settings, store=store, bolt=bolt, slack=slack, metrics=metrics, lifecycle=lifecycle)


def _installations(settings: Settings, store: Store) -> Installations | None:
    """With SLACK_CLIENT_ID: every workspace's installation, in Easel's database."""
    if not settings.oauth:
        return None
    assert settings.slack_client_id is not None
    return Installations(engine=store.engine, client_id=settings.slack_client_id,
                         on_saved=Retention(store).workspace_back)


def _oauth(settings: Settings, installs: Installations | None) -> dict[str, Any]:
    """Bolt's OAuth flow (GET /slack/install, GET /slack/oauth_redirect) and authorisation from the stored bot of
    each workspace; nothing with one token."""
    if installs is None:
        return {}
    from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings

    return {
        "oauth_settings": AsyncOAuthSettings(
            client_id=settings.slack_client_id, client_secret=settings.slack_client_secret,
            scopes=list(checks.NEEDED_SCOPES), installation_store=installs.installation_store,
            installation_store_bot_only=True, state_store=installs.state_store,
            install_path=INSTALL_PATH, redirect_uri_path=REDIRECT_PATH),
        "authorize": installs.authorize(),
    }


async def build(
    settings: Settings,
    *,
    today: Callable[[], datetime.date] = utc_today,
    now: Callable[[], float] = time.monotonic,
    refresh_every: float | None = None,
    retry_every: float | None = None,
    clock: Clock | None = None,
) -> Easel:
    """Everything, in this process: the intake and the worker that runs its jobs (the worker process, and
    tests, which run both in one process). The model list is read by `easel.refresher` once started, at
    first and then every `refresh_every` seconds (after a failure, `retry_every`). `clock` is the pacer's
    (tests drive their own)."""
    from bot.imaging import OpenAIImages, PayloadSlots, list_models
    from bot.inputs import Inputs
    from bot.jobs import JobRunner
    from bot.lineup import LineUp
    from bot.pacing import Pacer
    from bot.queue_status import Slots
    from bot.worker import Worker
    from storage.limits import Limits

    built: list[Worker] = []

    def wake() -> None:
        for worker in built:
            worker.wake()

    easel = await build_intake(settings, wake=wake, today=today, now=now)
    client = openai_client(settings)
    pacing = Pacer(Limits(easel.store), per_minute=settings.openai_images_per_minute, clock=clock)
    images = OpenAIImages(client, model=settings.openai_model, slots=PayloadSlots(settings.max_images_in_memory),
                          deadline=max(settings.openai_timeout * 2, 30.0), pacing=pacing)
    images.warm_up()
    attachments = Inputs(easel.slack)
    slots = Slots(settings.max_concurrent_generations)  # filled by the worker, read by the runner's queue status
    runner = JobRunner(store=easel.store, images=images, slack=easel.slack,
                       capacity=settings.max_concurrent_generations, slots=slots, metrics=easel.metrics,
                       pacing=pacing,
                       lease=settings.job_lease_seconds, publish_retry=settings.publish_retry_seconds,
                       lineup=LineUp(lifecycle=easel.lifecycle, chat_model=settings.openai_model),
                       safety_key=settings.safety_secret(), attachments=attachments,
                       prices=settings.price_table(),
                       admins=Admins(listed=settings.easel_admins, is_workspace_admin=easel.slack.is_workspace_admin))
    timing = {k: v for k, v in (("every", refresh_every), ("retry", retry_every)) if v is not None}
    easel.refresher = Refresher(lifecycle=easel.lifecycle, list_models=lambda: list_models(client), now=now,
                                **timing)
    worker = Worker(
        store=easel.store, runner=runner, slots=slots,
        lease=settings.job_lease_seconds, poll=settings.worker_poll_seconds, pacing=pacing,
    )
    built.append(worker)
    easel.worker, easel.openai_client, easel.attachments = worker, client, attachments
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
        if easel.not_ready is not None:
            return web.json_response({"ok": False, "mode": mode, "error": easel.not_ready}, status=503)
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

    async def metrics(request: web.Request) -> web.Response:
        token = easel.settings.metrics_token
        if token is not None and not hmac.compare_digest(request.headers.get("Authorization", ""),
                                                         f"Bearer {token}"):
            return web.json_response({"error": "a bearer token is required"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        try:
            figures = await asyncio.wait_for(easel.store.stats(), 5)
        except Exception as e:  # noqa: BLE001 - the counters are still worth a scrape
            log.warning("metrics: the database's figures could not be read (%s)", type(e).__name__)
            figures = None
        body = await asyncio.to_thread(metrics_module.render, easel.metrics, figures)
        return web.Response(body=body, headers={"Content-Type": metrics_module.CONTENT_TYPE})

    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get(METRICS_PATH, metrics)
    return app


async def serve(settings: Settings, *, stop: asyncio.Event, host: str = "0.0.0.0") -> None:
    """`python -m bot`: this process answers Slack; a child process (`python -m bot worker`) runs the jobs.

    Acknowledging Slack within its three seconds must never wait behind image work: decoding, uploading and
    database bookkeeping for hundreds of images would otherwise share one event loop (and one core) with the
    listeners. The two processes share only the database; new jobs are signalled to the worker through its
    standard input, and the worker also polls, so nothing depends on that signal arriving.

    Start-up checks what it can first: the database (in `build_intake`), the port, then the bot token with
    `auth.test` (a rejection ends start-up; an unreachable Slack is tried again while /healthz says why). Raises
    `checks.StartupError` for what the operator must fix.
    """
    worker = WorkerProcess(settings)
    easel = await build_intake(settings, wake=worker.wake)
    runner: web.AppRunner | None = None
    socket_handler = None
    try:
        await easel.store.warm_up()
        runner = web.AppRunner(web_app(easel, events=not settings.socket_mode, worker=worker), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, settings.port).start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise checks.port_error(settings.port) from None
            raise
        team = "every workspace that installs it"
        if not settings.oauth:  # one token: check it (with OAuth installs, each workspace's is checked as it comes)
            easel.not_ready = "checking the Slack token"
            identity = await checks.with_backoff(lambda: checks.slack_identity(easel.slack.client), what="Slack",
                                                 stop=stop, on_wait=lambda why: setattr(easel, "not_ready", why))
            if identity is None:
                return  # stopped while Slack was unreachable
            if missing := checks.missing_scopes(identity.scopes):
                log.warning("%s", checks.scope_warning(missing))
            team = f"team {identity.team or identity.team_id}"
            easel.not_ready = None
        await worker.start()
        if settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            socket_handler = AsyncSocketModeHandler(easel.bolt, settings.slack_app_token)
            easel.socket_connected = socket_handler.client.is_connected
            log.info("Easel is starting in Socket Mode (health on :%d%s)", settings.port, HEALTH_PATH)
            connecting = asyncio.create_task(_connect_socket(socket_handler, settings, stop),
                                             name="easel-socket-connect")
            try:
                await _until_stopped(stop, worker, connecting)
            finally:
                connecting.cancel()
        else:
            log.info("Easel is up for %s: Slack requests at :%d%s", team, settings.port, EVENTS_PATH)
            await _until_stopped(stop, worker)
        if not worker.fatal.done():
            log.info("stopping: the worker gets %.0f s for running jobs", settings.shutdown_grace_seconds)
            await worker.stop()  # requests that arrive meanwhile are still stored, for the next start
        if socket_handler is not None:
            await socket_handler.close_async()
    finally:
        await worker.kill()
        if runner is not None:
            await runner.cleanup()
        await easel.close()
    if worker.fatal.done():
        raise checks.StartupError(worker.fatal.result())  # the worker said why, in its own line


async def _until_stopped(stop: asyncio.Event, worker: WorkerProcess,
                         connecting: asyncio.Task[None] | None = None) -> None:
    """Until SIGTERM, or until the worker process refuses to run (a rejected OpenAI key, say), or Socket Mode
    fails to connect for good (a rejected app token: its StartupError is raised here)."""
    waiting = asyncio.ensure_future(stop.wait())
    pending: set[asyncio.Future[Any]] = {waiting, worker.fatal}
    if connecting is not None:
        pending.add(connecting)
    try:
        while True:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if connecting in done:
                connecting.result()
                pending.discard(connecting)  # connected: wait on for the rest
                continue
            return
    finally:
        waiting.cancel()


async def _connect_socket(handler: Any, settings: Settings, stop: asyncio.Event) -> None:
    """Connect to Socket Mode: the address comes from `apps.connections.open`, asked here with a capped, jittered
    back-off and one log line per failed attempt (slack_sdk would retry on its own, forever, with a traceback
    each time); a rejected app token ends start-up."""
    assert settings.slack_app_token is not None
    client = handler.client
    url = await checks.with_backoff(lambda: checks.socket_url(client.web_client, settings.slack_app_token),
                                    what="Socket Mode", stop=stop)
    if url is None:
        return
    client.wss_uri = url
    await client.connect()
    log.info("Socket Mode connected")


async def run_worker(settings: Settings, *, stop: asyncio.Event, wakeups: bool = False) -> None:
    """`python -m bot worker`: run jobs until `stop` is set, then stop gracefully. With `wakeups`, standard
    input is the parent's pipe: each byte says "new job", and its end means the parent is gone."""
    from bot.owners import free_jobs_of_dead_workers

    easel = await build(settings)
    assert easel.worker is not None
    await easel.store.warm_up()
    follower = asyncio.create_task(_follow_wakeups(easel.worker.wake, stop)) if wakeups else None
    key_check: asyncio.Task[None] | None = None
    purging = asyncio.create_task(purge_periodically(Retention(easel.store), days=settings.retention_days, stop=stop),
                                  name="easel-retention") if settings.retention_days else None
    try:
        listing, key_check = await _check_openai_key(easel, stop)
        # The jobs of a worker whose process is known to be dead (the last run of this one, say) are taken at
        # once; those of any other wait for their leases, renewed while their holder lives.
        await free_jobs_of_dead_workers(easel.store)
        easel.worker.start()
        assert easel.refresher is not None
        if listing is not None:
            await easel.refresher.accept(listing)  # read by the key check: the next read is due in a day
        easel.refresher.start()  # OpenAI's model list (now, unless just read), then about daily
        log.info("worker %s is running", easel.worker.worker_id)
        if wakeups:  # tell the parent, whose readiness check waits for this line
            sys.stdout.write(f"{READY_LINE}\n")
            sys.stdout.flush()
        await stop.wait()
        log.info("worker stopping: running jobs get %.0f s", settings.shutdown_grace_seconds)
        await easel.worker.stop(settings.shutdown_grace_seconds)
    finally:
        for task in (follower, key_check, purging):
            if task is not None:
                task.cancel()
        await easel.close()


async def purge_periodically(retention: Retention, *, days: float, stop: asyncio.Event, every: float = 3600.0,
                             now: Callable[[], float] = time.time) -> None:
    """Purge what is older than `days`, now and then every `every` seconds, until `stop`. (Each replica's worker
    does it; the batches are small and a row purged twice is simply not found the second time.)"""
    while not stop.is_set():
        try:
            purged = await retention.purge(before=now() - days * 86400)
            if purged:
                log.info("retention: purged %d job(s), %d prompt(s), %d thread(s) older than %g days",
                         purged.jobs, purged.generations, purged.threads, days)
        except Exception:
            log.exception("retention: the purge failed; trying again later")
        waiting = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiting}, timeout=every)
        finally:
            waiting.cancel()


async def _check_openai_key(
    easel: Easel, stop: asyncio.Event
) -> tuple[dict[str, str | None] | None, asyncio.Task[None] | None]:
    """The OpenAI key, checked once with `GET /v1/models` (whose answer is also the model list the lifecycle
    starts from). Rejected: StartupError (the worker exits 2 and the serving process stops with it).
    Unreachable: a warning, and the check goes on in the background (a key rejected then is logged as an
    error; requests meanwhile are told their key was not accepted)."""
    assert easel.openai_client is not None
    client = easel.openai_client
    try:
        return await checks.openai_models(client), None
    except checks.Unreachable as e:
        log.warning("OpenAI: %s; the key is checked again in the background", e)

    async def later() -> None:
        try:
            await checks.with_backoff(lambda: checks.openai_models(client), what="OpenAI", stop=stop, first=5.0,
                                      cap=300.0)
        except checks.StartupError as e:
            log.error("%s", e)

    return None, asyncio.create_task(later(), name="easel-openai-key")


async def _follow_wakeups(wake: Callable[[], None], stop: asyncio.Event) -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        wake()
    log.warning("the parent process is gone; stopping")
    stop.set()


class _WellFormed(AsyncMiddleware):
    """Bolt's first step after the signature check (HTTP and Socket Mode alike): a payload of a shape Slack
    never sends is refused here (400), before Bolt's own steps read it as if it had Slack's shape and fail
    with a 500. (A middleware object, not a function: Bolt prepares a function's arguments from the payload,
    and that alone can fail on such a payload.)"""

    def __init__(self, *, admit: Callable[[AsyncBoltRequest], Awaitable[BoltResponse | None]] | None = None):
        """`admit`, with installs in many workspaces: drops requests from workspaces without an installation."""
        self._admit = admit

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]  # noqa: A002
    ) -> BoltResponse:
        found = shapes.problem(req.body)
        if found is not None:
            log.warning("malformed signed request refused: %s", found)
            return BoltResponse(status=400, body={"error": "malformed request"})
        if self._admit is not None and (answer := await self._admit(req)) is not None:
            return answer
        return await next()


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
            except ValueError:  # a timestamp that is not a number, a body that is not UTF-8
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
        # Set (to the worker's own words) when the worker exits with code 2: it refuses to run as configured,
        # so starting it again would not help.
        self.fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()

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
        if code == 2:
            if not self.fatal.done():
                self.fatal.set_result("")  # the worker printed its one line itself
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
