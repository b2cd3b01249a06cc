"""The OpenAI side: one turn of a thread's Responses chain, with the `image_generation` tool.

Every call runs in background mode and is streamed, so the response id is known (and stored by the caller)
from the first event on. A stream that breaks is resumed from its last sequence number; a worker that
restarts picks the same response up again by id instead of paying for a second generation.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import openai

from bot import messages

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "incomplete", "cancelled")
_DECODE_IN_THREAD = 256 * 1024


class GenerationError(Exception):
    """A turn that did not produce an answer. `kind` drives what the user is told; `user_message` is it."""

    def __init__(self, kind: str, user_message: str, detail: str = ""):
        super().__init__(detail or kind)
        self.kind = kind
        self.user_message = user_message
        self.detail = detail


@dataclasses.dataclass
class Image:
    call_id: str
    data: bytes
    revised_prompt: str | None
    output_format: str | None


@dataclasses.dataclass
class Outcome:
    response_id: str
    images: list[Image]
    text: str
    usage: dict[str, Any] | None
    tool_usage: dict[str, Any] | None
    blocked: int = 0  # image calls stopped by moderation while others succeeded


@dataclasses.dataclass(frozen=True)
class Turn:
    """What one turn sends: the user's words, input images as (mimetype, bytes), the tool, the chain."""

    prompt: str
    tool: dict[str, Any]
    force_image: bool = False
    images: tuple[tuple[str, bytes], ...] = ()
    previous_response_id: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


class OpenAIImages:
    """Runs turns against the Responses API through a given `AsyncOpenAI` client."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        instructions: str = messages.INSTRUCTIONS,
        deadline: float = 600.0,
        max_resumes: int = 5,
    ):
        self._client = client
        self._model = model
        self._instructions = instructions
        self._deadline = deadline
        self._max_resumes = max_resumes

    @property
    def model(self) -> str:
        return self._model

    async def run(
        self,
        turn: Turn,
        *,
        resume_id: str | None = None,
        on_started: Callable[[str], Awaitable[None]],
    ) -> Outcome:
        """Run (or, given `resume_id`, pick up) one turn. Raises GenerationError."""
        started: list[str] = [resume_id] if resume_id else []

        async def remember(response_id: str) -> None:
            if not started:
                started.append(response_id)
                await on_started(response_id)

        try:
            async with asyncio.timeout(self._deadline):
                response = await self._collect(resume_id) if resume_id else None
                if response is None:
                    started.clear()
                    response = await self._start(turn, remember)
        except TimeoutError:
            if started:
                await self._cancel(started[0])
            raise GenerationError("timeout", messages.TIMED_OUT, f"no answer within {self._deadline:.0f} s") from None
        except openai.APIError as e:
            raise classify(e) from e
        return await outcome(response)

    async def _collect(self, response_id: str) -> Any:
        """Pick up a response started before a restart; None when it is gone or was cancelled (run it again)."""
        try:
            response = await self._follow(response_id, after=None)
        except openai.NotFoundError:
            log.info("response %s is gone; running the turn again", response_id)
            return None
        if response.status == "cancelled":
            log.info("response %s was cancelled; running the turn again", response_id)
            return None
        return response

    async def _start(self, turn: Turn, remember: Callable[[str], Awaitable[None]]) -> Any:
        content: list[dict[str, Any]] = [{"type": "input_text", "text": turn.prompt}]
        for mimetype, data in turn.images:
            url = f"data:{mimetype};base64,{base64.b64encode(data).decode('ascii')}"
            content.append({"type": "input_image", "image_url": url, "detail": "auto"})
        params: dict[str, Any] = {
            "model": self._model,
            "instructions": self._instructions,
            "input": [{"role": "user", "content": content}],
            "tools": [turn.tool],
            "tool_choice": {"type": "image_generation"} if turn.force_image else "auto",
            "background": True,
            "store": True,
            "stream": True,
        }
        if turn.previous_response_id:
            params["previous_response_id"] = turn.previous_response_id
        if turn.metadata:
            params["metadata"] = turn.metadata
        stream = await self._client.responses.create(**params)
        response_id, final, last_seq = await self._consume(stream, remember)
        if final is not None:
            return final
        if response_id is None:
            raise GenerationError("unavailable", messages.UNAVAILABLE, "the stream ended before the response began")
        return await self._follow(response_id, after=last_seq)

    async def _follow(self, response_id: str, *, after: int | None) -> Any:
        """Wait for a background response to finish: look it up, and stream the rest while it is running."""
        for attempt in range(self._max_resumes + 1):
            try:
                response = await self._client.responses.retrieve(response_id)
                if response.status in TERMINAL:
                    return response
                if after is None:
                    stream = await self._client.responses.retrieve(response_id, stream=True)
                else:
                    stream = await self._client.responses.retrieve(response_id, stream=True, starting_after=after)
                _, final, last_seq = await self._consume(stream, None)
                if final is not None:
                    return final
                after = last_seq if last_seq is not None else after
            except (openai.APIConnectionError, openai.InternalServerError) as e:
                if attempt == self._max_resumes:
                    raise
                log.warning("response %s: stream broke (%s); resuming", response_id, type(e).__name__)
            await asyncio.sleep(min(0.25 * 2**attempt, 5.0))
        raise GenerationError("unavailable", messages.UNAVAILABLE, f"response {response_id} never finished")

    async def _consume(
        self, stream: Any, remember: Callable[[str], Awaitable[None]] | None
    ) -> tuple[str | None, Any, int | None]:
        """Read events until the response ends. Returns (response id, final response or None if the stream
        broke off first, last sequence number seen)."""
        response_id: str | None = None
        last_seq: int | None = None
        try:
            async for event in stream:
                seq = getattr(event, "sequence_number", None)
                if isinstance(seq, int):
                    last_seq = seq
                kind = getattr(event, "type", "")
                response = getattr(event, "response", None)
                if response is not None and response_id is None:
                    response_id = response.id
                    if remember is not None:
                        await remember(response_id)
                if kind in ("response.completed", "response.failed", "response.incomplete"):
                    return response_id, response, last_seq
                if kind == "error":
                    log.warning("error event in stream: %s", getattr(event, "message", ""))
                    break
        except (openai.APIConnectionError, openai.APIError) as e:
            if response_id is None and not isinstance(e, openai.APIConnectionError):
                raise
            log.warning("stream cut off after event %s: %s", last_seq, type(e).__name__)
        finally:
            await stream.close()
        return response_id, None, last_seq

    async def _cancel(self, response_id: str) -> None:
        try:
            await self._client.responses.cancel(response_id)
        except openai.APIError as e:
            log.info("could not cancel %s: %s", response_id, e)


async def outcome(response: Any) -> Outcome:
    """Turn a finished Response into images and text, or raise GenerationError."""
    status = response.status
    if status == "failed":
        err = response.error
        code = getattr(err, "code", None) or ""
        message = getattr(err, "message", "") or ""
        if code == "rate_limit_exceeded":
            raise GenerationError("rate_limit", messages.RATE_LIMITED, message)
        if "policy" in code or "moderation" in code:
            raise GenerationError("moderation", messages.MODERATION, message)
        if code == "server_error":
            raise GenerationError("unavailable", messages.UNAVAILABLE, message)
        raise GenerationError("failed", messages.rejected(message or code or "the response failed"), message)
    if status == "incomplete":
        reason = getattr(response.incomplete_details, "reason", None)
        if reason == "content_filter":
            raise GenerationError("moderation", messages.MODERATION, "incomplete: content_filter")
        raise GenerationError("failed", messages.rejected(f"the answer was cut short ({reason})"), str(reason))
    if status == "cancelled":
        raise GenerationError("cancelled", messages.TIMED_OUT, "the response was cancelled")
    images: list[Image] = []
    blocked: list[str] = []
    for item in response.output:
        if getattr(item, "type", None) != "image_generation_call":
            continue
        if item.status == "completed" and item.result:
            result: str = item.result
            data = (
                await asyncio.to_thread(base64.b64decode, result)
                if len(result) > _DECODE_IN_THREAD
                else base64.b64decode(result)
            )
            images.append(Image(item.id, data, item.revised_prompt, item.output_format))
        else:
            err = item.error
            code = (err.get("code") if isinstance(err, dict) else getattr(err, "code", None)) or "failed"
            blocked.append(code)
    text = response.output_text or ""
    if not images and blocked:
        if any("moderation" in c or "policy" in c for c in blocked):
            raise GenerationError("moderation", messages.MODERATION, ", ".join(blocked))
        raise GenerationError("failed", messages.rejected(", ".join(blocked)), ", ".join(blocked))
    if not images and not text.strip():
        raise GenerationError("empty", messages.NO_OUTPUT, "no image and no text")
    usage = response.usage.model_dump() if response.usage is not None else None
    tool_usage = getattr(response, "tool_usage", None)
    if tool_usage is not None and hasattr(tool_usage, "model_dump"):
        tool_usage = tool_usage.model_dump()
    return Outcome(response.id, images, text, usage, tool_usage, blocked=len(blocked))


def classify(e: openai.APIError) -> GenerationError:
    """An SDK exception (after the SDK's own retries) as what the user should be told."""
    code = getattr(e, "code", None) or ""
    detail = str(e)
    if code == "previous_response_not_found":
        return GenerationError("chain_expired", messages.CHAIN_EXPIRED, detail)
    if code == "moderation_blocked" or "safety system" in detail:
        return GenerationError("moderation", messages.MODERATION, detail)
    if code == "model_not_found":
        return GenerationError("unknown_model", messages.unknown_model(getattr(e, "message", detail)), detail)
    if isinstance(e, openai.RateLimitError):
        return GenerationError("rate_limit", messages.RATE_LIMITED, detail)
    if isinstance(e, openai.APITimeoutError):
        return GenerationError("timeout", messages.TIMED_OUT, detail)
    if isinstance(e, openai.APIConnectionError | openai.InternalServerError):
        return GenerationError("unavailable", messages.UNAVAILABLE, detail)
    if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
        return GenerationError("auth", messages.rejected("Easel's OpenAI API key was not accepted."), detail)
    return GenerationError("rejected", messages.rejected(getattr(e, "message", detail)), detail)
