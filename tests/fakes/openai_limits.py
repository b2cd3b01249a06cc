"""Per-account rate limits for the fake OpenAI API, applied as the real service does.

`AccountLimits(images_per_minute=30)` given to `FakeOpenAI(limits=...)` makes the fake:
- count every authorised request against the account's requests per minute, and every `POST /v1/responses`
  as one image against its images per minute (the service cannot know how many images a turn will make
  before it runs; Easel's turns make one);
- answer a request beyond either limit with OpenAI's 429: `code: rate_limit_exceeded`, `type: requests`, the
  message naming the limit ("... on images per min (IPM): Limit 30, Used 30, Requested 1. Please try again
  in 1.8s. ..."), `retry-after` (whole seconds, rounded up) and `retry-after-ms`, and the account's
  `x-ratelimit-*-requests` headers. A rejected request uses nothing up;
- put `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests` (like
  "1s", "6m0s", "120ms") on every answer it counted. The image limit has no header of its own: it shows only
  in 429s, as on the real service.

OpenAI says a per-minute limit may be enforced over shorter periods ("60,000 requests/minute may be enforced
as 1,000 requests/second"): each limit is a token bucket refilled evenly at its rate that holds at most
`burst_seconds` of it (and at least one), so 30 images a minute is one every 2 s, not 30 at once.

Times come from `clock` (seconds; `time.monotonic` unless a test drives its own).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_HEADERS_KEY = web.RequestKey("easel_fake_ratelimit_headers", dict)


@dataclass
class _Bucket:
    per_minute: float
    burst_seconds: float
    tokens: float = math.nan
    at: float = math.nan

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_minute * self.burst_seconds / 60.0)

    def level(self, now: float) -> float:
        if math.isnan(self.at):
            return self.capacity
        return min(self.capacity, self.tokens + max(0.0, now - self.at) * self.per_minute / 60.0)

    def take(self, now: float) -> bool:
        level = self.level(now)
        self.tokens, self.at = level, now
        if level + 1e-9 < 1.0:
            return False
        self.tokens = level - 1.0
        return True

    def due_in(self, now: float) -> float:
        """Seconds until one token is there."""
        return max(0.0, 1.0 - self.level(now)) * 60.0 / self.per_minute

    def full_in(self, now: float) -> float:
        return max(0.0, self.capacity - self.level(now)) * 60.0 / self.per_minute


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes it in `x-ratelimit-reset-*`: "120ms", "1.5s", "6m0s"."""
    if seconds < 1.0:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60.0:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{rest:.3g}s"


@dataclass
class AccountLimits:
    """An OpenAI organisation's rate limits, for `FakeOpenAI(limits=...)`."""

    images_per_minute: float | None = None
    requests_per_minute: float = 10_000
    burst_seconds: float = 1.0
    states_limit: bool = True  # the 429's message names the image limit (OpenAI's does)
    organization: str = "org-fake"
    clock: Callable[[], float] = time.monotonic
    admitted_images: list[float] = field(default_factory=list)  # clock times of creates let through
    rejected: list[tuple[float, str]] = field(default_factory=list)  # (clock time, "images" | "requests")

    def __post_init__(self) -> None:
        self._requests = _Bucket(self.requests_per_minute, self.burst_seconds)
        self._images = _Bucket(self.images_per_minute, self.burst_seconds) if self.images_per_minute else None

    def admit(self, request: web.Request, route: str, body: dict[str, Any]) -> web.Response | None:
        """Count `request`; None to let it through, or the 429 to answer it with."""
        now = self.clock()
        if not self._requests.take(now):
            return self._reject(now, "requests", self._requests, body, "requests per min (RPM)")
        if route == "create" and self._images is not None:
            if not self._images.take(now):
                self._requests.tokens += 1.0  # a rejected request uses nothing up
                return self._reject(now, "images", self._images, body, "images per min (IPM)")
            self.admitted_images.append(now)
        request[_HEADERS_KEY] = self._headers(now)
        return None

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """aiohttp's `on_response_prepare`: the counted request's rate-limit headers on its answer."""
        headers = request.get(_HEADERS_KEY)
        if headers:
            for name, value in headers.items():
                response.headers.setdefault(name, value)

    def _headers(self, now: float) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": f"{self.requests_per_minute:g}",
            "x-ratelimit-remaining-requests": str(int(self._requests.level(now) + 1e-9)),
            "x-ratelimit-reset-requests": reset_text(self._requests.full_in(now)),
        }

    def _reject(self, now: float, kind: str, bucket: _Bucket, body: dict[str, Any], what: str) -> web.Response:
        self.rejected.append((now, kind))
        wait = bucket.due_in(now)
        used = sum(1 for t in self.admitted_images if now - t < 60.0) if kind == "images" else None
        model = _image_model(body) if kind == "images" else str(body.get("model") or "the model")
        if self.states_limit:
            message = (
                f"Rate limit reached for {model} in organization {self.organization} on {what}: "
                f"Limit {bucket.per_minute:g}, Used {used if used is not None else int(bucket.per_minute)}, "
                f"Requested 1. Please try again in {reset_text(wait)}. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."
            )
        else:
            message = f"Rate limit reached for {model}. Please try again in {reset_text(wait)}."
        headers = {
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
            **self._headers(now),
        }
        return web.json_response(
            {"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
            status=429, headers=headers,
        )


def _image_model(body: dict[str, Any]) -> str:
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "image_generation":
            return str(tool.get("model") or "gpt-image-2")
    return "gpt-image-2"
