"""The OpenAI side: one turn of a thread's Responses chain, with the `image_generation` tool.

Every call runs in background mode and is streamed, so the response id is known (and stored by the caller)
from the first event on. A stream that breaks is resumed from its last sequence number; a worker that
restarts picks the same response up again by id instead of paying for a second generation.

The stream is read with `bot.sse` rather than the SDK's typed decoder (which costs more than the image
itself does). Each image is taken from its own event (`output_item.done`), read
only with a payload slot (`PayloadSlots`): without one, the stream waits (its unread bytes stay in the socket),
so memory stays flat however many generations finish at once. The final event repeats every image; it is read
lean, without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import httpx2
import openai
import pybase64

from bot import messages, sse
from bot.answers import GenerationError, Image, Outcome, classify, failed, finished_image, outcome
from bot.pacing import Paced, Pacing, Unpaced

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "incomplete", "cancelled")
ITEM_DONE = "response.output_item.done"
IMAGE_BEGUN = "response.image_generation_call.in_progress"  # the model has started an image
PARTIAL = "response.image_generation_call.partial_image"  # a preview of an image being drawn (partial_images)
# The conversational model's instructions: what Easel is, and when to draw rather than answer in words.
INSTRUCTIONS = (
    "You are Easel, an image assistant inside Slack. People ask you for images in a Slack thread; each "
    "message in the thread continues the same conversation. When the person asks for an image, or for a change "
    "to the last image, call the image_generation tool with a clear, detailed prompt that keeps what they asked "
    "for. Images attached to the message are inputs to edit or combine. If the request is too unclear to draw, "
    "ask one short question instead. Keep text answers brief; Slack shows them as plain messages."
)


@dataclasses.dataclass(frozen=True)
class Turn:
    """What one turn sends: the user's words, input images as (mimetype, bytes), the tool, the chain."""

    prompt: str
    tool: dict[str, Any]
    force_image: bool = False
    images: tuple[tuple[str, bytes], ...] = ()
    previous_response_id: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    model: str | None = None  # the conversational model, if not the configured one (it was shut down)
    safety_identifier: str | None = None
    web_search: bool = False  # offer the model the web_search tool too
    mask: tuple[str, bytes] | None = None  # the tool's input_image_mask, for the first input image


class Previews(Protocol):
    """Who hears of a turn's partial images (the tool's `partial_images`)."""

    def wanted(self) -> bool:
        """Is there room to take one now? (If not, it is skipped unread.)"""
        ...

    def arrived(self, index: int, data: bytes) -> None:
        """The `index`-th partial image, decoded (called only after `wanted()` said yes)."""
        ...


class PayloadSlots:
    """How many large answers (a finished response with its images) Easel holds at once. Generations run
    in the background on OpenAI's side in any number; their payloads are read a few at a time."""

    def __init__(self, size: int):
        self._sem = asyncio.Semaphore(size)

    async def take(self) -> Callable[[], None]:
        await self._sem.acquire()
        return self._releaser()

    def _releaser(self) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._sem.release()

        return release


class OpenAIImages:
    """Runs turns against the Responses API through a given `AsyncOpenAI` client."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        slots: PayloadSlots,
        instructions: str = INSTRUCTIONS,
        deadline: float = 600.0,
        max_resumes: int = 5,
        pacing: Pacing | None = None,
    ):
        self._client = client
        self._pacing: Pacing = pacing or Unpaced()  # hears what OpenAI says of its limits when a turn starts
        self._model = model
        self._slots = slots
        self._instructions = instructions
        self._deadline = deadline
        self._max_resumes = max_resumes

    @property
    def model(self) -> str:
        return self._model

    def warm_up(self) -> None:
        """Load what the first turn would otherwise load while a user waits (the SDK imports its resources on
        first use)."""
        responses = self._client.responses
        _ = responses.with_streaming_response, responses.with_raw_response

    async def run(
        self,
        turn: Turn,
        *,
        resume_id: str | None = None,
        on_started: Callable[[str], Awaitable[None]],
        on_image: Callable[[Image], None] | None = None,
        previews: Previews | None = None,
        on_image_begun: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run (or, given `resume_id`, pick up) one turn. Raises GenerationError.

        `on_image` hears of each image as soon as its own event arrives, before the response is over (the
        response's final event repeats it, with the usage): the caller can start uploading it meanwhile.
        `previews` hears of each partial image the stream brings (when it has room for one), and
        `on_image_begun` of the image tool's start (the model may answer in words instead: then it hears nothing).
        The returned Outcome holds a payload slot until `outcome.release()` is called."""
        started: list[str] = [resume_id] if resume_id else []
        hold = _Hold(self._slots)
        arrivals = _Arrivals(on_image, previews, on_image_begun) if on_image is not None else None

        async def remember(response_id: str) -> None:
            if not started:
                started.append(response_id)
                await on_started(response_id)

        try:
            async with asyncio.timeout(self._deadline):
                response = await self._collect(resume_id, hold, arrivals) if resume_id else None
                if response is None:
                    started.clear()
                    response = await self._start(turn, remember, hold, arrivals)
            result = outcome(response)
        except TimeoutError:
            hold.release()
            if started:
                await self._cancel(started[0])
            raise GenerationError("timeout", messages.TIMED_OUT, f"no answer within {self._deadline:.0f} s") from None
        except openai.APIError as e:
            hold.release()
            raise classify(e) from e
        except BaseException:
            hold.release()
            raise
        result.release = hold.release
        return result

    async def _collect(
        self, response_id: str, hold: _Hold, arrivals: _Arrivals | None
    ) -> dict[str, Any] | None:
        """Pick up a response started before a restart; None when it is gone or was cancelled (run it again)."""
        try:
            response = await self._follow(response_id, hold, arrivals, after=None)
        except openai.NotFoundError:
            hold.release()
            log.info("response %s is gone; running the turn again", response_id)
            return None
        if response.get("status") == "cancelled":
            hold.release()
            log.info("response %s was cancelled; running the turn again", response_id)
            return None
        return response

    async def _start(
        self,
        turn: Turn,
        remember: Callable[[str], Awaitable[None]],
        hold: _Hold,
        arrivals: _Arrivals | None,
    ) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "input_text", "text": turn.prompt}]
        for mimetype, data in turn.images:
            url = f"data:{mimetype};base64,{pybase64.b64encode(data).decode('ascii')}"
            content.append({"type": "input_image", "image_url": url, "detail": "auto"})
        tool = turn.tool
        if turn.mask is not None:
            mask_url = f"data:{turn.mask[0]};base64,{pybase64.b64encode(turn.mask[1]).decode('ascii')}"
            tool = {**tool, "input_image_mask": {"image_url": mask_url}}
        tools = [tool, {"type": "web_search"}] if turn.web_search else [tool]
        params: dict[str, Any] = {
            "model": turn.model or self._model,
            "instructions": self._instructions,
            "input": [{"role": "user", "content": content}],
            "tools": tools,
            "tool_choice": {"type": "image_generation"} if turn.force_image else "auto",
            "background": True,
            "store": True,
            "stream": True,
        }
        if turn.previous_response_id:
            params["previous_response_id"] = turn.previous_response_id
        if turn.metadata:
            params["metadata"] = turn.metadata
        if turn.safety_identifier:
            params["safety_identifier"] = turn.safety_identifier
        # The body goes as it is (`extra_body`): it is plain JSON already, and the SDK's walk of it against its
        # typed parameters (for aliases and dates, which it has none of) costs CPU on every turn for nothing.
        async with self._paced(self._client.responses.with_streaming_response.create(extra_body=params)) as raw:
            response_id, final, last_seq = await self._consume(raw, remember, hold, arrivals)
        if final is not None:
            return final
        if response_id is None:
            raise GenerationError("unavailable", messages.UNAVAILABLE, "the stream ended before the response began")
        return await self._follow(response_id, hold, arrivals, after=last_seq)

    @contextlib.asynccontextmanager
    async def _paced(self, create: Any) -> AsyncIterator[Any]:
        """Start a turn, telling the pacer what OpenAI said of its limits. A 429 for a rate limit raises
        `Paced` (the job waits for its turn again; the SDK does not retry it); one that waiting cannot cure
        (an exhausted quota) is raised as it is."""
        async with contextlib.AsyncExitStack() as stack:
            sent_at = self._pacing.now()
            try:
                raw = await stack.enter_async_context(create)
            except openai.RateLimitError as e:
                if await self._pacing.rejected(e.response.headers, code=e.code, message=e.message, sent_at=sent_at):
                    raise Paced(e.message) from e
                raise
            await self._pacing.accepted(raw.headers, sent_at=sent_at)
            yield raw

    async def _follow(
        self, response_id: str, hold: _Hold, arrivals: _Arrivals | None, *, after: int | None
    ) -> dict[str, Any]:
        """Wait for a background response to finish: look it up, and stream the rest while it is running."""
        for attempt in range(self._max_resumes + 1):
            try:
                await hold.take()  # a finished response is large: look it up only with a slot
                looked_up = await self._client.responses.with_raw_response.retrieve(response_id)
                response = sse.loads(looked_up.content)
                if response.get("status") in TERMINAL:
                    return response
                hold.release()
                del response, looked_up
                query = {"stream": True} if after is None else {"stream": True, "starting_after": after}
                async with self._client.responses.with_streaming_response.retrieve(response_id, **query) as raw:
                    _, final, last_seq = await self._consume(raw, None, hold, arrivals)
                if final is not None:
                    return final
                after = last_seq if last_seq is not None else after
            except (openai.APIConnectionError, openai.InternalServerError) as e:
                hold.release()
                if attempt == self._max_resumes:
                    raise
                log.warning("response %s: stream broke (%s); resuming", response_id, type(e).__name__)
            await asyncio.sleep(min(0.25 * 2**attempt, 5.0))
        raise GenerationError("unavailable", messages.UNAVAILABLE, f"response {response_id} never finished")

    async def _consume(
        self,
        raw: Any,
        remember: Callable[[str], Awaitable[None]] | None,
        hold: _Hold,
        arrivals: _Arrivals | None,
    ) -> tuple[str | None, dict[str, Any] | None, int | None]:
        """Read events until the response ends. Returns (response id, final response or None if the stream
        broke off first, last sequence number seen).

        With `arrivals`, each image is taken from its own event, and the final event, which repeats them all,
        is read lean (without them)."""
        response_id: str | None = None
        last_seq: int | None = None
        wanted, lean = (sse.FINAL | {ITEM_DONE}, sse.FINAL) if arrivals is not None else (sse.FINAL, frozenset())
        previews = arrivals.previews if arrivals is not None else None
        optional = {PARTIAL: previews.wanted} if previews is not None else None
        if previews is not None:
            wanted = wanted | {PARTIAL}
        begun = arrivals.begun if arrivals is not None else None
        if begun is not None:
            wanted = wanted | {IMAGE_BEGUN}
        try:
            async for event in sse.events(raw.iter_bytes(), admit=hold.take, wanted=wanted, lean=lean,
                                          optional=optional):
                if event.sequence_number is not None:
                    last_seq = event.sequence_number
                data = event.data or {}
                response = data.get("response")
                if isinstance(response, dict) and response_id is None and isinstance(response.get("id"), str):
                    response_id = response["id"]
                    if remember is not None:
                        await remember(response_id)
                if event.type in sse.FINAL and isinstance(response, dict):
                    if arrivals is None or arrivals.fill(response):
                        return response_id, response, last_seq
                    log.info("response %s: an image left out of its final event never came; looking it up",
                             response_id)
                    break
                if event.type == IMAGE_BEGUN and begun is not None:
                    begun()
                    continue
                if event.type == PARTIAL and previews is not None and event.data is not None:
                    _preview(previews, event.data)
                    continue
                if event.type == ITEM_DONE and arrivals is not None:
                    image = finished_image(data.get("item"))
                    if image is not None:
                        arrivals.add(image)
                if event.type == "error":
                    # The error's code and message are at the event's top level (the documented shape), or
                    # nested in an `error` object (seen too).
                    nested = data.get("error")
                    error = nested if isinstance(nested, dict) else data
                    failure = failed(error.get("code"), error.get("message"))
                    if failure.kind != "unavailable" or response_id is None:
                        raise failure
                    log.warning("error event in stream (%s): %s", error.get("code"), error.get("message"))
                    break  # a server error: the background response may still finish; look it up
        except httpx2.TransportError as e:
            log.warning("stream cut off after event %s: %s", last_seq, type(e).__name__)
        except ValueError as e:  # json.JSONDecodeError too
            log.warning("unreadable event after %s: %s", last_seq, e)
        hold.release()
        return response_id, None, last_seq

    async def _cancel(self, response_id: str) -> None:
        try:
            await self._client.responses.cancel(response_id)
        except openai.APIError as e:
            log.info("could not cancel %s: %s", response_id, e)


class _Hold:
    """This turn's claim on a payload slot: taken at most once, released at most once."""

    def __init__(self, slots: PayloadSlots):
        self._slots = slots
        self._release: Callable[[], None] | None = None

    async def take(self) -> None:
        if self._release is None:
            self._release = await self._slots.take()

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class _Arrivals:
    """A turn's images as their own events bring them, before the final event repeats them (leanly)."""

    def __init__(self, on_image: Callable[[Image], None], previews: Previews | None = None,
                 begun: Callable[[], None] | None = None):
        self._on_image = on_image
        self.previews = previews
        self.begun = begun  # hears of each image's start (`response.image_generation_call.in_progress`)
        self._images: dict[str, Image] = {}

    def add(self, image: Image) -> None:
        if image.call_id not in self._images:
            self._images[image.call_id] = image
            self._on_image(image)

    def fill(self, response: dict[str, Any]) -> bool:
        """Put each image left out of a lean final event back (its bytes, as they came). False if one of them
        never came in an event of its own (its answer must then be looked up whole)."""
        for item in response.get("output") or []:
            if isinstance(item, dict) and item.get("result") == sse.SENT_BEFORE:
                image = self._images.get(str(item.get("id")))
                if image is None:
                    return False
                item["result"] = image.data
        return True


def _preview(previews: Previews, data: dict[str, Any]) -> None:
    encoded, index = data.get("partial_image_b64"), data.get("partial_image_index")
    if not isinstance(encoded, str) or not encoded:
        return
    try:
        image = pybase64.b64decode(encoded, validate=True)
    except ValueError:
        log.warning("a partial image that is not base64; skipped")
        return
    previews.arrived(index if isinstance(index, int) else 0, image)


async def list_models(client: openai.AsyncOpenAI, *, seconds: float = 30.0) -> dict[str, str | None]:
    """`GET /v1/models`: every model the key may use, with its shutdown date (YYYY-MM-DD, None when none is
    announced). Raises what the SDK raises."""
    found: dict[str, str | None] = {}
    async for model in client.with_options(timeout=seconds, max_retries=1).models.list():
        date = getattr(model, "shutdown_date", None)
        found[model.id] = date if isinstance(date, str) and date else None
    return found
