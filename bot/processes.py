"""Running Easel: `python -m bot` (this process answers Slack, a child process runs the jobs), `python -m bot
worker`, and what keeps them going (start-up checks, the worker process's supervision, retention's purges)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot import checks
from bot.assembly import Easel, build, build_intake
from bot.config import Settings
from bot.slack_budget import Budget
from bot.web import EVENTS_PATH, HEALTH_PATH, web_app
from storage.retention import Retention
from storage.spend import Spend

log = logging.getLogger(__name__)

READY_LINE = "easel-worker-ready"
# Images pass through buffers of a few megabytes. Below the mmap threshold glibc serves them from its heaps,
# where they are reused; above it each one is a fresh mapping, faulted in page by page and handed back when
# freed: with a low threshold every socket read of an image is a fresh mapping, which costs CPU per image and
# does not lower the peak. The trim threshold keeps up to 64 MB of freed heap for the next image instead of
# returning it to the system and faulting it in again (it does not raise the peak). Fixed values also keep
# glibc from moving them on its own; two arenas keep the heaps few.
WORKER_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "8388608",
    "MALLOC_TRIM_THRESHOLD_": "67108864",
    "MALLOC_ARENA_MAX": "2",
}


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
    purging = asyncio.create_task(  # (with RETENTION_DAYS=0 it only releases budget reservations left over)
        purge_periodically(Retention(easel.store.db), days=settings.retention_days, stop=stop,
                           spend=Spend(easel.store.db), slack_budget=easel.slack_budget), name="easel-retention")
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
                             now: Callable[[], float] = time.time, spend: Spend | None = None,
                             slack_budget: Budget | None = None) -> None:
    """Purge what is older than `days` (0: nothing), now and then every `every` seconds, until `stop`; release
    the budget reservations no run will settle (`spend`); and forget Slack rate-limit buckets idle for an hour
    (`slack_budget`). (Each replica's worker does it; the batches are small and a row purged twice is simply
    not found the second time.)"""
    while not stop.is_set():
        try:
            if days:
                purged = await retention.purge(before=now() - days * 86400)
                if purged:
                    log.info("retention: purged %d job(s), %d prompt(s), %d thread(s) older than %g days",
                             purged.jobs, purged.generations, purged.threads, days)
            released = await spend.release_stale(now=now()) if spend is not None else 0
            if released:
                log.info("budgets: released %d reservation(s) no job will settle", released)
            if slack_budget is not None:
                await slack_budget.forget_idle(now=now())
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
