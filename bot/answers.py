"""What OpenAI's answers mean: a finished response as its images and text, and a failure (a failed response, a
stream `error` event, an SDK exception) as the kind of failure and the sentence the user is told."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pybase64

from bot import messages


class GenerationError(Exception):
    """A turn that did not produce an answer. `kind` drives what the user is told; `user_message` is it."""

    def __init__(self, kind: str, user_message: str, detail: str = "", *, code: str | None = None,
                 param: str | None = None, message: str | None = None, usage: dict[str, Any] | None = None,
                 tool_usage: dict[str, Any] | None = None):
        super().__init__(detail or kind)
        self.kind = kind
        self.user_message = user_message
        self.detail = detail  # logged and stored with the job, never shown: it may carry OpenAI's words
        self.code = code  # OpenAI's error code, param and message, for what a refusal teaches
        self.param = param
        self.message = message
        self.usage = usage  # what OpenAI reported it billed for a response that ended so (a moderation block)
        self.tool_usage = tool_usage


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
    sources: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (url, title) the text cites
    release: Callable[[], None] = lambda: None  # frees the payload slot this answer holds


def finished_image(item: Any) -> Image | None:
    """An output item, if it is a finished image."""
    if not isinstance(item, dict) or item.get("type") != "image_generation_call":
        return None
    if item.get("status") != "completed" or not item.get("result"):
        return None
    return Image(str(item.get("id")), _image_bytes(item["result"]), item.get("revised_prompt"),
                 item.get("output_format"))


def _image_bytes(result: bytes | str) -> bytes:
    """An image call's result: already decoded by `sse.loads` when it is large, base64 text when small."""
    if isinstance(result, bytes):
        return result
    return pybase64.b64decode(result, validate=True)


def _text_parts(response: dict[str, Any]) -> list[dict[str, Any]]:
    parts = []
    for item in response.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    parts.append(part)
    return parts


def _output_text(response: dict[str, Any]) -> str:
    return "".join(str(part.get("text") or "") for part in _text_parts(response))


def _sources(response: dict[str, Any]) -> list[tuple[str, str]]:
    """The web pages the answer's text cites (`url_citation` annotations), each once, in order."""
    found: dict[str, str] = {}
    for part in _text_parts(response):
        for note in part.get("annotations") or []:
            if isinstance(note, dict) and note.get("type") == "url_citation":
                url = str(note.get("url") or "")
                if url.startswith(("https://", "http://")) and url not in found:
                    found[url] = str(note.get("title") or "")
    return list(found.items())


def failed(code: Any, message: Any) -> GenerationError:
    """A response that failed (`response.failed`, or a stream `error` event), by OpenAI's error code. The
    user hears Easel's sentence for its kind; OpenAI's message goes to the detail (the log) only."""
    code, message = str(code or ""), str(message or "")
    detail = f"{code or 'no code'}: {message}" if message else code or "the response failed"
    if code == "rate_limit_exceeded":
        return GenerationError("rate_limit", messages.RATE_LIMITED, detail, code=code)
    if "policy" in code or "moderation" in code:
        return GenerationError("moderation", messages.MODERATION, detail, code=code)
    if code in ("server_error", "vector_store_timeout"):
        return GenerationError("unavailable", messages.UNAVAILABLE, detail, code=code)
    if code.startswith(("invalid_image", "image_", "invalid_base64", "unsupported_image", "empty_image",
                        "failed_to_download")):
        return GenerationError("input_image", messages.BAD_INPUT_IMAGE, detail, code=code)
    return GenerationError("failed", messages.FAILED, detail, code=code, message=message)


def outcome(response: dict[str, Any]) -> Outcome:
    """Turn a finished response (the API's JSON) into images and text, or raise GenerationError."""
    status = response.get("status")
    if status == "failed":
        err = response.get("error") or {}
        raise failed(err.get("code"), err.get("message"))
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        if reason == "content_filter":
            raise GenerationError("moderation", messages.MODERATION, "incomplete: content_filter",
                                  usage=response.get("usage"), tool_usage=response.get("tool_usage"))
        raise GenerationError("failed", messages.CUT_SHORT, f"incomplete: {reason}")
    if status == "cancelled":
        raise GenerationError("cancelled", messages.TIMED_OUT, "the response was cancelled")
    images: list[Image] = []
    blocked: list[str] = []
    for item in response.get("output") or []:
        if not isinstance(item, dict) or item.get("type") != "image_generation_call":
            continue
        image = finished_image(item)
        if image is not None:
            item["result"] = None  # drop the answer's copy as soon as the image exists
            images.append(image)
        else:
            blocked.append(str((item.get("error") or {}).get("code") or "failed"))
    text = _output_text(response)
    if not images and blocked:
        if any("moderation" in c or "policy" in c for c in blocked):
            raise GenerationError("moderation", messages.MODERATION, ", ".join(blocked),
                                  usage=response.get("usage"), tool_usage=response.get("tool_usage"))
        raise GenerationError("failed", messages.FAILED, ", ".join(blocked))
    if not images and not text.strip():
        raise GenerationError("empty", messages.NO_OUTPUT, "no image and no text")
    return Outcome(str(response.get("id")), images, text, response.get("usage"), response.get("tool_usage"),
                   blocked=len(blocked), sources=_sources(response))


def _timed_out(e: BaseException) -> bool:
    """Did a time-out really happen? The SDK's aiohttp transport reports a dropped connection as a connect
    time-out; the cause chain tells them apart."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        if isinstance(seen, aiohttp.ClientConnectionError):
            return False
        seen = seen.__cause__ or seen.__context__
    return True


def classify(e: openai.APIError) -> GenerationError:
    """An SDK exception (after the SDK's own retries) as what the user should be told: Easel's sentence for
    its kind, never OpenAI's text (it can name the organisation), which goes to the detail for the log."""
    code = getattr(e, "code", None) or ""
    detail = str(e)
    where = {"code": code or None, "param": getattr(e, "param", None), "message": getattr(e, "message", None)}
    if code == "previous_response_not_found":
        return GenerationError("chain_expired", messages.CHAIN_EXPIRED, detail)
    if code == "moderation_blocked" or "safety system" in detail:
        return GenerationError("moderation", messages.MODERATION, detail)
    if code == "model_not_found":
        return GenerationError("unknown_model", messages.REJECTED, detail, **where)
    if code == "insufficient_quota":  # a 429 too, but waiting does not cure it
        return GenerationError("quota", messages.QUOTA_EXHAUSTED, detail)
    if isinstance(e, openai.RateLimitError):
        return GenerationError("rate_limit", messages.RATE_LIMITED, detail)
    if isinstance(e, openai.APITimeoutError) and _timed_out(e):
        return GenerationError("timeout", messages.TIMED_OUT, detail)
    if isinstance(e, openai.APIConnectionError | openai.InternalServerError):
        return GenerationError("unavailable", messages.UNAVAILABLE, detail)
    if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
        return GenerationError("auth", messages.KEY_REJECTED, detail)
    if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError):
        return GenerationError("rejected", messages.REJECTED, detail, **where)
    if isinstance(e, openai.APIStatusError) or e.body is not None:  # a stream error the SDK raised
        body = e.body if isinstance(e.body, dict) else {}
        return failed(body.get("code") or code, body.get("message") or getattr(e, "message", detail))
    return GenerationError("rejected", messages.REJECTED, detail, **where)
