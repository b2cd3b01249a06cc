"""Composition root: builds every piece from `Settings` and runs Easel (HTTP mode or Socket Mode).

Nothing else in the code base builds clients, apps or stores; everything receives them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import openai
import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.imaging import OpenAIImages, PayloadSlots
from bot.jobs import JobRunner
from bot.publishing import SlackPublisher, retry_handlers
from bot.service import Intake
from bot.worker import Worker
from handlers import register_handlers
from handlers.payloads import Context
from storage import Store, open_store

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"


@dataclasses.dataclass
class Easel:
    settings: Settings
    store: Store
    bolt: AsyncApp
    worker: Worker
    slack: SlackPublisher
    openai_client: openai.AsyncOpenAI
    socket_connected: Callable[[], Awaitable[bool]] | None = None

    async def close(self) -> None:
        await self.slack.close()
        await self.openai_client.close()
        await self.store.close()


def openai_client(settings: Settings) -> openai.AsyncOpenAI:
    """Image turns take minutes: the read time-out is the gap allowed between two stream events."""
    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        timeout=openai.Timeout(settings.openai_timeout, connect=10.0),
        max_retries=settings.openai_max_retries,
    )


async def build(settings: Settings) -> Easel:
    store = await open_store(settings.database_url)
    # One connection pool for every Slack call (slack_sdk otherwise opens a new session per call).
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120, sock_connect=10))
    web_client = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=retry_handlers(),
        session=http,
    )
    client = openai_client(settings)
    slack = SlackPublisher(web_client, session=http)
    slots = PayloadSlots(settings.max_images_in_memory)
    images = OpenAIImages(client, model=settings.openai_model, slots=slots,
                          deadline=max(settings.openai_timeout * 2, 30.0))
    worker = Worker(
        store=store,
        runner=JobRunner(store=store, images=images, slack=slack, capacity=settings.max_concurrent_generations,
                         slots=slots),
        max_generations=settings.max_concurrent_generations,
        lease=settings.job_lease_seconds,
    )
    bolt = AsyncApp(
        client=web_client,
        signing_secret=settings.slack_signing_secret,
        request_verification_enabled=not settings.socket_mode,
        # The listeners only store a job (milliseconds), and it must be stored before Slack hears "ok".
        process_before_response=True,
        logger=logging.getLogger("slack_bolt"),
    )
    intake = Intake(store=store, wake=worker.wake, max_pending_per_user=settings.max_queued_per_user)
    register_handlers(bolt, intake=intake, ctx=Context(defaults=settings.image_defaults(),
                                                       table=settings.model_table()))
    return Easel(settings=settings, store=store, bolt=bolt, worker=worker, slack=slack, openai_client=client)


def web_app(easel: Easel, *, events: bool = True) -> web.Application:
    """The HTTP side: Slack's requests (HTTP mode) and the readiness check."""
    app = easel.bolt.web_app(path=EVENTS_PATH) if events else web.Application()

    async def healthz(_: web.Request) -> web.Response:
        mode = "socket" if easel.settings.socket_mode else "http"
        try:
            await asyncio.wait_for(easel.store.ping(), 5)
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            return web.json_response({"ok": False, "mode": mode, "error": type(e).__name__}, status=503)
        if easel.socket_connected is not None and not await easel.socket_connected():
            return web.json_response({"ok": False, "mode": mode, "error": "socket not connected"}, status=503)
        return web.json_response({"ok": True, "mode": mode})

    app.router.add_get(HEALTH_PATH, healthz)
    return app


async def serve(settings: Settings, *, stop: asyncio.Event, host: str = "0.0.0.0") -> None:
    """Run until `stop` is set, then stop gracefully."""
    easel = await build(settings)
    if easel.store.dialect == "sqlite":
        released = await easel.store.release_all()  # one process per SQLite file: leftovers are ours
        if released:
            log.info("picked up %d unfinished job(s) from the last run", released)
    runner = web.AppRunner(web_app(easel, events=not settings.socket_mode), access_log=None)
    await runner.setup()
    socket_handler = None
    connecting: asyncio.Task[None] | None = None
    try:
        await web.TCPSite(runner, host, settings.port).start()
        easel.worker.start()  # leftover jobs run even while the socket is still connecting
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
        log.info("stopping: no new work; running jobs get %.0f s", settings.shutdown_grace_seconds)
        if socket_handler is not None:
            await socket_handler.close_async()
        if connecting is not None and not connecting.done():
            connecting.cancel()
        await easel.worker.stop(settings.shutdown_grace_seconds)
    finally:
        await runner.cleanup()
        await easel.close()
