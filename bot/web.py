"""The HTTP side: Slack's requests (HTTP mode), the readiness check and the metrics, and the guards in front of
Bolt that keep a malformed request from ever becoming a 5xx."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier

from bot import metrics as metrics_module
from bot.config import Settings
from handlers import shapes

if TYPE_CHECKING:
    from bot.assembly import Easel
    from bot.processes import WorkerProcess

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


def web_app(easel: Easel, *, events: bool = True, worker: WorkerProcess | None = None) -> web.Application:
    """The HTTP side: Slack's requests (HTTP mode) and the readiness check."""
    if events:
        app = easel.bolt.web_app(path=EVENTS_PATH)
        app.middlewares.append(malformed_requests(easel.settings))
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
            figures = await asyncio.wait_for(easel.store.queue.stats(), 5)
        except Exception as e:  # noqa: BLE001 - the counters are still worth a scrape
            log.warning("metrics: the database's figures could not be read (%s)", type(e).__name__)
            figures = None
        body = await asyncio.to_thread(metrics_module.render, easel.metrics, figures)
        return web.Response(body=body, headers={"Content-Type": metrics_module.CONTENT_TYPE})

    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get(METRICS_PATH, metrics)
    return app

class WellFormed(AsyncMiddleware):
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


def malformed_requests(settings: Settings) -> Any:
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
