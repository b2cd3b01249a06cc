"""A local fake of the OpenAI Responses API (``/v1/responses`` with the ``image_generation`` tool).

It is an aiohttp application on ``127.0.0.1:<ephemeral port>`` that the real ``openai.AsyncOpenAI`` client
talks to through ``base_url``. Behaviour is chosen by the request itself (prompt markers such as
``[[text]]``, ``[[two]]``, ``[[moderation]]``) or by queued :class:`Fault` objects.

Partial images: an image turn whose events can be streamed (``stream: true``, or ``background: true``, which a
later retrieve can stream) and whose image_generation tool asks for ``partial_images`` (1-3) carries that many
``response.image_generation_call.partial_image`` events per image, spread over the generation, between
``image_generation_call.generating`` and ``.completed``: each a real image of the requested size and
output_format (from ``partial_factory``: a flat colour by default, different from the final image), with
``partial_image_index`` 0, 1, ... Each adds ``PARTIAL_IMAGE_OUTPUT_TOKENS`` to ``tool_usage.image_gen``'s
output tokens. Faults: ``[[late_partials]]`` in the prompt (or ``Fault(late_partials=True)``) sends them right
after the image's ``output_item.done`` instead; ``[[fewer_partials]]`` sends one fewer than asked
(``Fault(partials_sent=N)``: at most N).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import functools
import hashlib
import io
import json
import os
import re
import struct
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from PIL import Image

from tests.fakes import openai_models, openai_spec
from tests.fakes.openai_limits import AccountLimits

Json = dict[str, Any]
ImageFactory = Callable[[int, int, str, str], bytes]
Route = Literal["create", "retrieve", "cancel", "delete", "models", "any"]

DEFAULT_IMAGE_MODELS = frozenset(openai_models.IMAGE_MODELS)
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp", "gif", "svg"})
TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
IMAGE_OUTPUT_TOKENS = 1056
PARTIAL_IMAGE_OUTPUT_TOKENS = 100  # each partial image, in the image tool's output tokens (OpenAI's figure, about)
TEXT_CHUNK = 500
ASK_STYLE = "What style would you like?"
HERE_IS_IMAGE = "Here is your image."
WEB_SOURCES = (  # what a [[web]] prompt "finds" when the request offers the web_search tool
    ("https://weather.example/lyon", "Lyon: tomorrow's forecast"),
    ("https://news.example/lyon|quiz", "Lyon <news> & more"),
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_RESPONSE_PATH = re.compile(r"^/v1/responses/(?P<id>[^/]+)(?P<cancel>/cancel)?$")
_SIZE = re.compile(r"^(\d+)x(\d+)$")


# --------------------------------------------------------------------------- images


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(width: int, height: int, raw_rows: bytes, *, level: int = 9) -> bytes:
    """Encode 8-bit RGB rows (each prefixed by its filter byte) as a PNG file."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw_rows, level))
        + _png_chunk(b"IEND", b"")
    )


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG of one colour."""
    row = b"\x00" + bytes(rgb) * width
    return encode_png(width, height, row * height)


@functools.lru_cache(maxsize=8)
def noise_png(width: int, height: int) -> bytes:
    """A valid PNG of random pixels that does not compress (1024x1024 is about 3 MB); cached per size."""
    raw = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))
    return encode_png(width, height, raw, level=0)


def default_image_factory(width: int, height: int, fmt: str, prompt: str) -> bytes:
    """A real image of the requested size and format, one colour (from the prompt): a PNG (paletted, so it costs
    nothing to make at any size), JPEG, WebP or GIF that Pillow opens at `width` x `height`; or an SVG."""
    digest = hashlib.sha256(prompt.encode()).digest()
    rgb = (digest[0], digest[1], digest[2])
    if fmt == "svg":
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<rect width="100%" height="100%" fill="#{digest[:3].hex()}"/><!-- {digest.hex()} --></svg>'
        ).encode()
    if fmt == "png":
        return palette_png(width, height, rgb)
    return _pillow_image(width, height, fmt, rgb)


def palette_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG: 1-bit paletted, its pixel data (all zero) compressed once per size."""
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"PLTE", bytes(rgb)) + _zero_rows(width, height)
            + _png_chunk(b"IEND", b""))


@functools.lru_cache(maxsize=32)
def _zero_rows(width: int, height: int) -> bytes:
    return _png_chunk(b"IDAT", zlib.compress((b"\x00" + bytes((width + 7) // 8)) * height, 9))


@functools.lru_cache(maxsize=256)
def _pillow_image(width: int, height: int, fmt: str, rgb: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    if fmt == "gif":
        image = Image.new("P", (width, height), 0)
        image.putpalette(list(rgb))
        image.save(out, "GIF")
    elif fmt == "webp":
        Image.new("RGB", (width, height), rgb).save(out, "WEBP", lossless=True, method=0)
    elif fmt == "jpeg":
        Image.new("RGB", (width, height), rgb).save(out, "JPEG", quality=85)
    else:
        raise ValueError(f"no image format {fmt!r}")
    return out.getvalue()


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class Recorded:
    """One HTTP request as received (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any | None
    headers: dict[str, str]


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour, consumed first-in-first-out by requests it applies to.

    ``route`` picks the endpoint ("create" = POST /v1/responses, "retrieve" = GET /v1/responses/{id},
    "cancel", "delete", or "any"); ``match`` is a substring the request's user text must contain (for
    routes with an id, the text of the stored response). The fault is used ``times`` times.
    Effects, applied in this order: ``delay`` seconds before anything is sent; ``drop`` closes the
    connection with no answer; ``status`` answers with that HTTP error; ``cut_after`` closes a stream
    abruptly after that many events; ``fail_response`` ends the response with ``response.failed``;
    ``error_event`` ends the stream with a top-level ``error`` event; ``omit_events`` leaves events of these
    types out of the stream (they stay in the response's log, for later streams).
    Partial images (create only): ``late_partials`` sends each image's partial images after its
    ``output_item.done`` rather than before its ``image_generation_call.completed``; ``partials_sent`` sends at
    most that many per image (fewer than the tool asked for).
    """

    status: int | None = None
    code: str | None = None
    message: str | None = None
    type: str | None = None
    param: str | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    should_retry: bool | None = None
    delay: float | None = None
    drop: bool = False
    cut_after: int | None = None
    fail_response: bool = False
    error_event: bool = False
    nested_error: bool = False  # the error event carries {"error": {...}} instead of top-level code/message
    omit_events: tuple[str, ...] = ()
    late_partials: bool = False
    partials_sent: int | None = None
    times: int = 1
    match: str | None = None
    route: Route = "create"

    def applies(self, route: str, text: str | None, *, stream: bool) -> bool:
        """Whether this fault fits a request to ``route`` with user text ``text``."""
        if self.route not in ("any", route):
            return False
        if self.match is not None and (text is None or self.match not in text):
            return False
        if self.cut_after is not None and not stream:
            return False
        shapes = self.fail_response or self.error_event or self.late_partials or self.partials_sent is not None
        return not (shapes and route != "create")


@dataclass(eq=False)
class FakeResponse:
    """A response known to the fake: its request, current body and event log."""

    id: str
    request: Json
    text: str
    body: Json
    items: list[Json]
    background: bool
    stored: bool
    fault: Fault | None = None
    partials_asked: int = 0  # partial images per image the request asked for (0 if its events cannot be streamed)
    partials_made: int = 0  # partial images sent so far, all images together
    events: list[Json] = field(default_factory=list)
    encoded: dict[int, bytes] = field(default_factory=dict)  # sequence number -> the event as SSE bytes
    finished: bool = False
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set (then replaced) on each change

    def touch(self) -> None:
        """Wake the streams following this response (only these: with hundreds open, waking all is costly)."""
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def status(self) -> str:
        """Current status: queued, in_progress, completed, failed or cancelled."""
        return str(self.body["status"])


@dataclass
class _QueuedFault:
    fault: Fault
    remaining: int


class _Reject(Exception):
    """An HTTP error answer decided while validating a request."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.response = error_response(status, message, type=type, param=param, code=code)


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-style JSON error answer."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    all_headers = {"x-request-id": _new_id("req_")}
    all_headers.update(headers or {})
    return web.json_response(body, status=status, headers=all_headers)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _format_seconds(value: float) -> str:
    return f"{value:g}"


# --------------------------------------------------------------------------- request reading (pure)


def user_text(value: Any) -> str:
    """Concatenate (no separator) the user text of a Responses ``input``: a string, or input_text parts."""
    if isinstance(value, str):
        return value
    parts: list[str] = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "input_text":
            parts.append(str(item.get("text", "")))
        content = item.get("content")
        if isinstance(content, str) and item.get("role") != "assistant":
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, dict) and part.get("type") == "input_text"
            )
    return "".join(parts)


def _has_input_image(value: Any) -> bool:
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "input_image":
            return True
        content = item.get("content")
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") == "input_image" for part in content
        ):
            return True
    return False


def _input_images(value: Any) -> list[str]:
    """The image_url of each input_image in a request's input, in order."""
    found: list[str] = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        parts = [item] if item.get("type") == "input_image" else item.get("content")
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and part.get("type") == "input_image" and isinstance(part.get("image_url"), str):
                found.append(part["image_url"])
    return found


def _data_url_image(url: str) -> Image.Image | None:
    head, _, data = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
        return image
    except (ValueError, OSError):
        return None


def mask_refusal(index: int, mask: Any, body: Json) -> str | None:
    """Why OpenAI refuses the image tool's input_image_mask (None: it takes it). The mask edits the first
    input image: it must be a PNG with an alpha channel, of the same dimensions."""
    if not isinstance(mask, dict) or not (mask.get("image_url") or mask.get("file_id")):
        return "input_image_mask needs an image_url or a file_id."
    if mask.get("file_id"):
        return None  # (Easel sends masks inline)
    images = _input_images(body.get("input"))
    if not images:
        return "input_image_mask requires an input image to edit."
    image = _data_url_image(str(mask["image_url"]))
    if image is None or image.format != "PNG":
        return "Invalid mask image format - mask image must be a PNG."
    if image.mode not in ("RGBA", "LA", "PA") and not (image.mode == "P" and "transparency" in image.info):
        return "Invalid mask image format - mask image missing alpha channel."
    target = _data_url_image(images[0])
    if target is not None and target.size != image.size:
        return "The mask image and the input image must have the same dimensions."
    return None


def _image_tool(body: Json) -> tuple[int, Json] | None:
    for index, tool in enumerate(body.get("tools") or []):
        if isinstance(tool, dict) and tool.get("type") == "image_generation":
            return index, tool
    return None


def _wants_image(body: Json, text: str) -> bool:
    if "[[text]]" in text:
        return False
    choice = body.get("tool_choice")
    if choice == "none":
        return False
    forced = isinstance(choice, dict) and choice.get("type") == "image_generation"
    return forced or _image_tool(body) is not None


def long_text() -> str:
    paragraphs = []
    for n in range(1, 40):
        paragraphs.append(
            f"Style option {n}: a painterly take with soft light, layered textures and a calm palette. "
            "It suits portraits, landscapes and quiet still lifes, and it prints well at large sizes. "
            "Tell me which direction you prefer and I will draw it right away for you."
        )
    text = "\n\n".join(paragraphs)[:9000]
    return text if not text[-1].isspace() else text[:-1] + "."


def _parse_size(size: str, param: str) -> tuple[int, int]:
    if size == "auto":
        return 1024, 1024
    found = _SIZE.match(size)
    if not found or int(found.group(1)) == 0 or int(found.group(2)) == 0:
        raise _Reject(
            400,
            f"Invalid value: '{size}'. Supported values are 'WIDTHxHEIGHT' or 'auto'.",
            param=param,
            code="invalid_value",
        )
    return int(found.group(1)), int(found.group(2))


# --------------------------------------------------------------------------- the fake


class OpenAIObserver:
    """What a FakeOpenAI given ``observer=`` tells it, as things happen: synchronously, in the fake's event loop.
    Every method does nothing here; an observer overrides those it needs."""

    def received(self, request: Recorded) -> None:
        """A request was read (its body included) and recorded, before it is answered."""

    def generation_started(self, response: FakeResponse) -> None:
        """The generation of ``response`` begins (it then takes ``latency`` seconds per image)."""

    def generation_ended(self, response: FakeResponse) -> None:
        """That generation is over: completed, failed or cancelled (``response.status`` says which)."""


class FakeOpenAI:
    """The fake server. Use ``async with FakeOpenAI() as fake:`` and point the SDK at ``fake.base_url``."""

    def __init__(
        self, *, api_key: str = "sk-test", latency: float = 0.0, image_factory: ImageFactory | None = None,
        today: Callable[[], datetime.date] | None = None,
        limits: AccountLimits | None = None,
        observer: OpenAIObserver | None = None,
        partial_factory: ImageFactory | None = None,
    ) -> None:
        self.api_key = api_key
        # GET /v1/models: id -> shutdown date (a test may change it at any time); models are refused from
        # their shutdown date on, by `today` (UTC by default)
        self.models: dict[str, str | None] = dict(openai_models.LISTING)
        self.today: Callable[[], datetime.date] = today or (lambda: datetime.datetime.now(datetime.UTC).date())
        self.limits = limits  # the account's rate limits (tests/fakes/openai_limits.py); None: unlimited
        self.latency = latency
        self.image_factory: ImageFactory = image_factory or default_image_factory
        self.partial_factory: ImageFactory = partial_factory or default_image_factory  # (w, h, format, prompt)
        self.known_image_models: set[str] = set(DEFAULT_IMAGE_MODELS)
        self.requests: list[Recorded] = []
        self.responses: dict[str, FakeResponse] = {}
        self.in_flight = 0
        self.peak_in_flight = 0  # the most generations in flight at once, since the start (or a reset to 0)
        self.gate = asyncio.Event()  # generations finish only while it is set (clear it to hold them all)
        self.gate.set()
        self.final_written_at: dict[str, float] = {}  # response id -> time.monotonic() its last event was sent
        self._encodings: dict[int, tuple[bytes, str, bytes]] = {}  # id(image) -> (image, base64, its bytes)
        self._base64_texts: dict[int, tuple[bytes, str, bytes]] = {}  # id(base64 text) -> the same
        self.base_url = ""
        self._faults: list[_QueuedFault] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._observer = observer

    # ---- lifecycle

    async def start(self) -> None:
        """Listen on 127.0.0.1 with an ephemeral port and set ``base_url``."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        if self.limits is not None:
            app.on_response_prepare.append(self.limits.on_prepare)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def close(self) -> None:
        """Stop generation tasks and live streams, then the server."""
        self._closing = True
        self._notify()
        for resp in self.responses.values():
            resp.touch()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- test helpers

    def create_requests(self) -> list[Json]:
        """JSON bodies of every POST /v1/responses received, in order."""
        return [r.json for r in self.requests if r.method == "POST" and r.path == "/v1/responses"]

    def forget(self, response_id: str) -> None:
        """Make a response unknown (retrieve and previous_response_id then give 404)."""
        self.responses.pop(response_id, None)

    def add_fault(self, fault: Fault) -> None:
        """Queue a fault; faults are consumed in the order they were added."""
        self._faults.append(_QueuedFault(fault, fault.times))

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true, re-checking whenever the fake's state changes."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if predicate():
                    return
                await changed.wait()

    async def wait_for_creates(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until at least ``n`` POST /v1/responses requests were received."""
        await self.wait_until(lambda: len(self.create_requests()) >= n, timeout)

    # ---- plumbing

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _take_fault(self, route: str, text: str | None, *, stream: bool) -> Fault | None:
        for queued in self._faults:
            if queued.fault.applies(route, text, stream=stream):
                queued.remaining -= 1
                if queued.remaining <= 0:
                    self._faults.remove(queued)
                return queued.fault
        return None

    async def _record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            json=parsed,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.requests.append(recorded)
        self._notify()
        if self._observer is not None:
            self._observer.received(recorded)
        return recorded

    def _auth_error(self, recorded: Recorded) -> web.Response | None:
        header = recorded.headers.get("authorization")
        if header == f"Bearer {self.api_key}":
            return None
        if not header:
            return error_response(401, "You didn't provide an API key.")
        return error_response(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        denied = self._auth_error(recorded)
        if denied is not None:
            return denied
        route, response_id = self._route(request)
        body = recorded.json if isinstance(recorded.json, dict) else {}
        limited = self.limits.admit(request, route, body) if self.limits is not None else None
        if limited is not None:
            self._notify()
            return limited
        if route == "create":
            text: str | None = user_text(body.get("input"))
            stream = body.get("stream") is True
        else:
            known = self.responses.get(response_id or "")
            text = known.text if known else None
            stream = request.query.get("stream") == "true"
        fault = self._take_fault(route, text, stream=stream)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                return self._drop(request)
            if fault.status is not None:
                return self._fault_response(fault)
        try:
            if route == "models":
                return self._json(openai_models.listing_body(self.models))
            if route == "create":
                return await self._create(request, recorded.json, fault)
            if route == "retrieve" and response_id:
                return await self._retrieve(request, response_id, fault)
            if route == "cancel" and response_id:
                return await self._cancel(response_id)
            if route == "delete" and response_id:
                return self._delete(response_id)
        except _Reject as reject:
            return reject.response
        return error_response(404, f"Invalid URL ({request.method} {request.path})")

    @staticmethod
    def _route(request: web.Request) -> tuple[str, str | None]:
        if request.path == "/v1/models":
            return ("models" if request.method == "GET" else "other"), None
        if request.path == "/v1/responses":
            return ("create" if request.method == "POST" else "other"), None
        found = _RESPONSE_PATH.match(request.path)
        if not found:
            return "other", None
        if found.group("cancel"):
            return ("cancel" if request.method == "POST" else "other"), found.group("id")
        return {"GET": "retrieve", "DELETE": "delete"}.get(request.method, "other"), found.group("id")

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never delivered: the connection is gone

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        status = fault.status or 500
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = _format_seconds(fault.retry_after)
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = _format_seconds(fault.retry_after_ms)
        if fault.should_retry is not None:
            headers["x-should-retry"] = "true" if fault.should_retry else "false"
        if status == 429:
            default_type, default_message = "requests", "Rate limit reached. Please try again later."
        elif status >= 500:
            default_type = "server_error"
            default_message = "The server had an error while processing your request. Sorry about that!"
        else:
            default_type, default_message = "invalid_request_error", f"Fake error {status}."
        return error_response(
            status,
            fault.message or default_message,
            type=fault.type or default_type,
            param=fault.param,
            code=fault.code,
            headers=headers,
        )

    # ---- POST /v1/responses

    async def _create(self, request: web.Request, body: Any, fault: Fault | None) -> web.StreamResponse:
        if not isinstance(body, dict):
            raise _Reject(400, "We could not parse the JSON body of your request.")
        refused = openai_spec.check_create(body)  # what the published spec (and its prose) refuses
        if refused is not None:
            raise _Reject(400, refused.message, type=refused.type, param=refused.param, code=refused.code)
        resp = self._plan(body)
        resp.fault = fault
        if resp.stored:
            self.responses[resp.id] = resp
        stream = body.get("stream") is True
        cut_after = fault.cut_after if fault else None
        omit = fault.omit_events if fault else ()
        if resp.background:
            self._set_status(resp, "queued")
            self._emit(resp, "response.created", response=resp.body)
            self._emit(resp, "response.queued", response=resp.body)
            self._spawn(resp)
            if stream:
                return await self._stream(request, resp, after=-1, cut_after=cut_after, omit=omit)
            return self._json(resp.body)
        self._emit(resp, "response.created", response=resp.body)
        task = self._spawn(resp)
        try:
            if stream:
                return await self._stream(request, resp, after=-1, cut_after=cut_after, omit=omit)
            await task
            return self._json(resp.body)
        finally:
            if not task.done():
                task.cancel()

    def _plan(self, body: Json) -> FakeResponse:
        """Validate a create request and decide its whole output (raises _Reject)."""
        for name in ("model", "input"):
            if body.get(name) in (None, ""):
                raise _Reject(
                    400,
                    f"Missing required parameter: '{name}'.",
                    param=name,
                    code="missing_required_parameter",
                )
        gone = openai_models.chat_refusal(str(body["model"]), self.models, self.today())
        if gone is not None:
            status, message, param, code = gone
            raise _Reject(status, message, param=param, code=code)
        background = body.get("background") is True
        stored = body.get("store", True) is not False
        if background and not stored:
            raise _Reject(400, "Background mode requires store=true.", param="background")
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.responses:
            raise _Reject(
                404,
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        text = user_text(body["input"])
        found = _image_tool(body)
        index, tool = found if found else (0, {})
        if found:
            self._check_tool(index, tool)
            if "input_image_mask" in tool:
                refused = mask_refusal(index, tool["input_image_mask"], body)
                if refused is not None:
                    raise _Reject(400, refused, param=f"tools[{index}].input_image_mask", code="invalid_value")
        items: list[Json] = []
        searched = "[[web]]" in text and any(
            isinstance(t, dict) and t.get("type") == "web_search" for t in body.get("tools") or [])
        if searched:
            items.append({"type": "web_search_call", "id": _new_id("ws_"), "status": "completed",
                          "action": {"type": "search", "query": text[:100],
                                     "sources": [{"type": "url", "url": url} for url, _ in WEB_SOURCES]}})
        if _wants_image(body, text):
            if "[[moderation400]]" in text:
                raise _Reject(
                    400,
                    "Your request was rejected by the safety system. safety_violations=[violence]",
                    type="image_generation_user_error",
                    code="moderation_blocked",
                )
            edit = previous is not None or _has_input_image(body["input"])
            count = 2 if "[[two]]" in text else 1
            for variant in range(1, count + 1):
                items.append(self._image_item(index, tool, text, variant=variant, edit=edit))
            message = long_text() if "[[long]]" in text else HERE_IS_IMAGE
        else:
            message = long_text() if "[[long]]" in text else ASK_STYLE
        items.append(
            {
                "type": "message",
                "id": _new_id("msg_"),
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": message, "annotations": [], "logprobs": []}],
            }
        )
        if searched:  # the answer cites what the search found
            cited = " ".join(f"[{n}]" for n in range(1, len(WEB_SOURCES) + 1))
            part = items[-1]["content"][0]
            part["text"] = f"{message} Sources: {cited}"
            start = len(message) + len(" Sources: ")
            for n, (url, title) in enumerate(WEB_SOURCES):
                begin = start + 4 * n
                part["annotations"].append({"type": "url_citation", "start_index": begin, "end_index": begin + 3,
                                            "url": url, "title": title})
        response_id = _new_id("resp_")
        streamable = background or body.get("stream") is True
        return FakeResponse(
            id=response_id,
            request=body,
            text=text,
            body=self._body(body, response_id),
            items=items,
            background=background,
            stored=stored,
            partials_asked=int(tool.get("partial_images") or 0) if found and streamable else 0,
        )

    def _check_tool(self, index: int, tool: Json) -> None:
        model = tool.get("model")
        if model is not None and model not in self.known_image_models:
            raise _Reject(
                400,
                f"The model '{model}' does not exist or you do not have access to it.",
                param=f"tools[{index}].model",
                code="model_not_found",
            )
        refused = openai_models.tool_refusal(index, tool, self.models, self.today())
        if refused is not None:
            status, message, param, code = refused
            raise _Reject(status, message, param=param, code=code)
        fmt = tool.get("output_format", "png")
        if fmt not in IMAGE_FORMATS:
            raise _Reject(
                400, f"Invalid value: '{fmt}'.", param=f"tools[{index}].output_format", code="invalid_value"
            )
        _parse_size(str(tool.get("size", "auto")), f"tools[{index}].size")
        if fmt == "gif" and int(tool.get("partial_images") or 0) > 0:  # the SDK's docstring of output_format
            raise _Reject(400, "GIF output does not support partial image streaming (partial_images greater than 0).",
                          param=f"tools[{index}].partial_images", code="invalid_value")
        if tool.get("background") == "transparent" and (fmt == "jpeg" or model == "gpt-image-2"):
            raise _Reject(
                400,
                "Transparent background is not supported for this model or output format.",
                param=f"tools[{index}].background",
            )

    def _image_item(self, index: int, tool: Json, text: str, *, variant: int, edit: bool) -> Json:
        size = str(tool.get("size", "auto"))
        width, height = _parse_size(size, f"tools[{index}].size")
        fmt = str(tool.get("output_format", "png"))
        action = tool.get("action", "auto")
        if action == "auto":
            action = "edit" if edit else "generate"
        suffix = f" (variant {variant})" if variant > 1 else ""
        item: Json = {
            "type": "image_generation_call",
            "id": _new_id("ig_"),
            "status": "completed",
            "result": None,
            "revised_prompt": f"A detailed rendering of: {text}{suffix}",
            "action": action,
            "background": tool.get("background", "auto"),
            "output_format": fmt,
            "quality": tool.get("quality", "auto"),
            "size": f"{width}x{height}",
            "error": None,
        }
        if "[[moderation]]" in text:
            item["status"] = "failed"
            item["error"] = {
                "type": "image_generation_user_error",
                "code": "moderation_blocked",
                "message": "Your request was rejected by the safety system.",
                "param": None,
                "moderation_details": {"moderation_stage": "input", "categories": ["violence"]},
            }
        else:
            image = self.image_factory(width, height, fmt, text + suffix)
            item["result"] = self._base64(image)
        return item

    @staticmethod
    def _body(req: Json, response_id: str) -> Json:
        return {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "background": req.get("background") is True,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "metadata": req.get("metadata") or {},
            "model": req["model"],
            "output": [],
            "parallel_tool_calls": req.get("parallel_tool_calls", True),
            "previous_response_id": req.get("previous_response_id"),
            "store": req.get("store", True) is not False,
            "tool_choice": req.get("tool_choice", "auto"),
            "tools": req.get("tools") or [],
            "temperature": req.get("temperature", 1.0),
            "top_p": req.get("top_p", 1.0),
            "truncation": "disabled",
            "user": None,
            "usage": None,
            "tool_usage": None,
        }

    # ---- generation

    def _spawn(self, resp: FakeResponse) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._produce(resp))
        resp.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _emit(self, resp: FakeResponse, type_: str, **fields: Any) -> None:
        event = copy.deepcopy({"type": type_, "sequence_number": len(resp.events), **fields})
        resp.events.append(event)
        if type_ in TERMINAL_EVENTS:
            resp.finished = True
        resp.touch()
        self._notify()

    def _set_status(self, resp: FakeResponse, status: str) -> None:
        resp.body["status"] = status
        resp.touch()
        self._notify()

    async def _produce(self, resp: FakeResponse) -> None:
        if self._observer is not None:
            self._observer.generation_started(resp)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self._generate(resp)
        except asyncio.CancelledError:
            if not resp.finished:
                resp.finished = True
                self._set_status(resp, "cancelled")
            raise
        finally:
            self.in_flight -= 1
            self._notify()
            if self._observer is not None:
                self._observer.generation_ended(resp)

    async def _generate(self, resp: FakeResponse) -> None:
        self._set_status(resp, "in_progress")
        self._emit(resp, "response.in_progress", response=resp.body)
        output: list[Json] = resp.body["output"]
        images = [item for item in resp.items if item["type"] == "image_generation_call"]
        if not images and self._fail_if_faulted(resp):
            return
        for index, final in enumerate(resp.items):
            if final["type"] == "web_search_call":
                self._emit_search(resp, index, final)
            elif final["type"] == "image_generation_call":
                pending = {**final, "status": "in_progress", "result": None, "error": None}
                output.append(pending)
                self._emit(resp, "response.output_item.added", output_index=index, item=pending)
                self._emit(
                    resp,
                    "response.image_generation_call.in_progress",
                    output_index=index,
                    item_id=final["id"],
                )
                pending["status"] = "generating"
                self._emit(
                    resp, "response.image_generation_call.generating", output_index=index, item_id=final["id"]
                )
                partials, late = self._partials_planned(resp, final)
                step = self.latency / (partials + 1)
                for n in range(0 if late else partials):
                    await asyncio.sleep(step)
                    self._emit_partial(resp, index, final, n)
                await asyncio.sleep(step if partials and not late else self.latency)
                await self.gate.wait()
                if self._fail_if_faulted(resp):
                    return
                if final["status"] == "completed":
                    self._emit(
                        resp,
                        "response.image_generation_call.completed",
                        output_index=index,
                        item_id=final["id"],
                    )
                output[index] = final
                self._emit(resp, "response.output_item.done", output_index=index, item=final)
                for n in range(partials if late else 0):
                    self._emit_partial(resp, index, final, n)
            else:
                self._emit_message(resp, index, final)
        resp.body.update(status="completed", completed_at=int(time.time()), **self._usage(resp))
        self._emit(resp, "response.completed", response=resp.body)

    def _partials_planned(self, resp: FakeResponse, final: Json) -> tuple[int, bool]:
        """How many partial images this image gets, and whether they come late (after its output_item.done)."""
        if final["status"] != "completed":
            return 0, False
        count, fault = resp.partials_asked, resp.fault
        if "[[fewer_partials]]" in resp.text:
            count = max(0, count - 1)
        if fault is not None and fault.partials_sent is not None:
            count = min(count, max(0, fault.partials_sent))
        return count, "[[late_partials]]" in resp.text or (fault is not None and fault.late_partials)

    def _emit_partial(self, resp: FakeResponse, index: int, final: Json, n: int) -> None:
        width, height = (int(side) for side in final["size"].split("x"))
        image = self.partial_factory(width, height, final["output_format"], f"{final['revised_prompt']} [partial {n}]")
        resp.partials_made += 1
        self._emit(
            resp,
            "response.image_generation_call.partial_image",
            output_index=index,
            item_id=final["id"],
            partial_image_index=n,
            partial_image_b64=self._base64(image),
            size=final["size"],
            quality=final["quality"],
            background=final["background"],
            output_format=final["output_format"],
        )

    def _emit_search(self, resp: FakeResponse, index: int, final: Json) -> None:
        pending = {**final, "status": "in_progress"}
        resp.body["output"].append(pending)
        self._emit(resp, "response.output_item.added", output_index=index, item=pending)
        for stage in ("in_progress", "searching", "completed"):
            self._emit(resp, f"response.web_search_call.{stage}", output_index=index, item_id=final["id"])
        resp.body["output"][index] = final
        self._emit(resp, "response.output_item.done", output_index=index, item=final)

    def _emit_message(self, resp: FakeResponse, index: int, final: Json) -> None:
        text: str = final["content"][0]["text"]
        item_id = final["id"]
        pending = {**final, "status": "in_progress", "content": []}
        resp.body["output"].append(pending)
        self._emit(resp, "response.output_item.added", output_index=index, item=pending)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"output_index": index, "item_id": item_id, "content_index": 0}
        self._emit(resp, "response.content_part.added", part=part, **where)
        for start in range(0, len(text), TEXT_CHUNK):
            self._emit(
                resp,
                "response.output_text.delta",
                delta=text[start : start + TEXT_CHUNK],
                logprobs=[],
                **where,
            )
        self._emit(resp, "response.output_text.done", text=text, logprobs=[], **where)
        annotations = final["content"][0].get("annotations") or []
        for n, annotation in enumerate(annotations):
            self._emit(resp, "response.output_text.annotation.added", annotation=annotation, annotation_index=n,
                       **where)
        self._emit(resp, "response.content_part.done", part={**part, "text": text, "annotations": annotations},
                   **where)
        resp.body["output"][index] = final
        self._emit(resp, "response.output_item.done", output_index=index, item=final)

    def _fail_if_faulted(self, resp: FakeResponse) -> bool:
        fault = resp.fault
        if fault is None or not (fault.fail_response or fault.error_event):
            return False
        code = fault.code or "server_error"
        message = fault.message or "The server had an error while processing your request."
        resp.body.update(status="failed", error={"code": code, "message": message})
        if fault.error_event and fault.nested_error:
            self._emit(resp, "error", error={"code": code, "message": message, "param": fault.param})
        elif fault.error_event:
            self._emit(resp, "error", code=code, message=message, param=fault.param)
        else:
            resp.body["output"] = []
            self._emit(resp, "response.failed", response=resp.body)
        return True

    @staticmethod
    def _usage(resp: FakeResponse) -> Json:
        text_tokens = max(1, len(resp.text) // 4)
        message = resp.items[-1]["content"][0]["text"]
        images = [item for item in resp.items if item["type"] == "image_generation_call"]
        made = sum(1 for item in images if item["status"] == "completed")
        output_tokens = max(1, len(message) // 4) + 30 * len(images)
        input_tokens = 20 + text_tokens
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        if not images:
            return {"usage": usage, "tool_usage": None}
        image_in = text_tokens * len(images)
        image_out = IMAGE_OUTPUT_TOKENS * made + PARTIAL_IMAGE_OUTPUT_TOKENS * resp.partials_made
        image_gen = {
            "input_tokens": image_in,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": image_in},
            "output_tokens": image_out,
            "total_tokens": image_in + image_out,
        }
        searches = sum(1 for item in resp.items if item["type"] == "web_search_call")
        return {"usage": usage, "tool_usage": {"image_gen": image_gen, "web_search": {"num_requests": searches}}}

    # ---- streaming

    async def _stream(
        self, request: web.Request, resp: FakeResponse, *, after: int, cut_after: int | None,
        omit: tuple[str, ...] = (),
    ) -> web.StreamResponse:
        """Answer with SSE: logged events with sequence_number > ``after``, then live ones until the end."""
        sse = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-request-id": _new_id("req_"),
            }
        )
        await sse.prepare(request)
        sent = 0
        position = after + 1
        while not self._closing:
            changed = resp.changed
            batch = resp.events[position:]
            position += len(batch)
            for event in batch:
                if cut_after is not None and sent >= cut_after:
                    if request.transport is not None:
                        request.transport.close()
                    return sse
                if event["type"] in omit:
                    continue
                await sse.write(self._encoded(resp, event))
                sent += 1
                if event["type"] in TERMINAL_EVENTS:
                    self.final_written_at.setdefault(resp.id, time.monotonic())
            if resp.finished and position >= len(resp.events):
                break
            if not batch:
                await changed.wait()
        return sse

    def _base64(self, image: bytes) -> str:
        """The image's base64, encoded once per image (a load test sends the same image hundreds of times)."""
        found = self._encodings.get(id(image))
        if found is None or found[0] is not image:
            if len(self._encodings) >= 64:
                self._encodings.clear()
                self._base64_texts.clear()
            text = base64.b64encode(image).decode("ascii")
            found = self._encodings[id(image)] = (image, text, text.encode("ascii"))
            self._base64_texts[id(text)] = found
        return found[1]

    def _dumps(self, value: Any) -> bytes:
        """Compact JSON, with the base64 this fake made spliced in rather than re-scanned by json.dumps (which
        would escape nothing in it anyway): the fake's own cost stays small next to the app's."""
        spliced: list[bytes] = []

        def swap(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: swap(x) for k, x in v.items()}
            if isinstance(v, list):
                return [swap(x) for x in v]
            if isinstance(v, str) and len(v) > 4096:
                known = self._base64_texts.get(id(v))
                if known is not None and known[1] is v:
                    spliced.append(known[2])
                    return "\x00"
            return v

        text = json.dumps(swap(value), separators=(",", ":")).encode()
        if not spliced:
            return text
        parts = text.split(b'"\\u0000"')
        assert len(parts) == len(spliced) + 1, "a NUL string in a response would confuse the splice"
        out = [parts[0]]
        for data, rest in zip(spliced, parts[1:], strict=True):
            out += [b'"', data, b'"', rest]
        return b"".join(out)

    def _encoded(self, resp: FakeResponse, event: Json) -> bytes:
        """The event as SSE bytes, encoded once (events are frozen copies; several streams may send one)."""
        seq = event["sequence_number"]
        found = resp.encoded.get(seq)
        if found is None:
            found = resp.encoded[seq] = b"".join(
                (b"event: ", event["type"].encode(), b"\ndata: ", self._dumps(event), b"\n\n")
            )
        return found

    # ---- other routes

    async def _retrieve(
        self, request: web.Request, response_id: str, fault: Fault | None
    ) -> web.StreamResponse:
        resp = self._known(response_id)
        if request.query.get("stream") != "true":
            return web.Response(
                body=self._dumps(resp.body),
                content_type="application/json",
                headers={"x-request-id": _new_id("req_")},
            )
        if not resp.background:
            raise _Reject(
                400, "Only responses created with background=true can be streamed again.", param="stream"
            )
        try:
            after = int(request.query.get("starting_after", "-1"))
        except ValueError:
            raise _Reject(400, "Invalid 'starting_after'.", param="starting_after") from None
        return await self._stream(request, resp, after=after, cut_after=fault.cut_after if fault else None)

    async def _cancel(self, response_id: str) -> web.Response:
        resp = self._known(response_id)
        if not resp.background:
            raise _Reject(400, "Only responses created with background=true can be cancelled.")
        task = resp.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return self._json(resp.body)

    def _delete(self, response_id: str) -> web.Response:
        resp = self._known(response_id)
        del self.responses[response_id]
        if resp.task is not None and not resp.task.done():
            resp.task.cancel()
        return web.json_response({"id": response_id, "object": "response", "deleted": True})

    def _known(self, response_id: str) -> FakeResponse:
        resp = self.responses.get(response_id)
        if resp is None:
            raise _Reject(404, f"Response with id '{response_id}' not found.", param="response_id")
        return resp

    @staticmethod
    def _json(body: Json) -> web.Response:
        return web.json_response(body, headers={"x-request-id": _new_id("req_")})
