"""Pacing: Easel keeps to its OpenAI account's image rate limit instead of meeting 429s.

OpenAI limits images per minute per organisation (5, 20, 50, 150, 250 for tiers 1-5). Every turn that may
draw takes a token from one bucket in the database (`storage.limits`), shared by every worker task of every
replica; a job waits for its token in the queue, as "queued", with its place told like any other wait. The
bucket refills evenly (at most one second's worth at once: OpenAI may enforce a per-minute limit per second),
at 90% of the limit, so that the jitter of requests on their way never takes them over it.

The rate:
- `OPENAI_IMAGES_PER_MINUTE` set: 90% of it, never more.
- Unknown: 5 a minute (tier 1's limit, which any account that can make images has), doubling with each
  accepted request while requests wait for the pacer and no 429 has come (a slow start, as TCP's: waiting
  requests reach 40 a minute within some 20 s, and an overshoot costs a single 429). A 429 that states the limit
  (OpenAI's message says "images per minute ... Limit 30") sets the rate to 90% of it; one that does not halves
  it (once per overshoot, however many requests it met), after which it grows by 5% per accepted request.
  What was learned is in the database: every replica paces by it, and a restart keeps it. A stated limit is
  trusted for a day; then the rate may grow past it again (accounts move up a tier).
- `Retry-After` (or `retry-after-ms`) on a 429 pauses every replica's creates until it has passed; so does
  an `x-ratelimit-remaining-requests` (or `-tokens`) of 0 on any answer, until its `x-ratelimit-reset-*`.
  `x-ratelimit-limit-requests` caps the rate too (each turn is one request).

A 429 on the request that starts a turn is not retried by the SDK (`no_sdk_retry_on_429`): the job goes back
to the queue at its place (its id) and tries again when the bucket allows (`Paced`). Its other retries (5xx,
connection errors, and 429s on looking a response up) stay the SDK's.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import Any, Protocol

from storage.limits import Bucket, Limits

log = logging.getLogger(__name__)

BUCKET = "openai-images"
MARGIN = 0.9  # of a known limit
START = 5.0  # images a minute while the limit is unknown: tier 1's
FLOOR = 1.0  # halving stops here
CEILING = 10_000.0  # the most an unknown limit is probed up to
FAST, SLOW = 2.0, 1.05  # growth per accepted request: before any 429, and after one
CUT = 0.5  # on a 429 that does not say the limit
BURST_SECONDS = 1.0  # the bucket holds at most this many seconds' worth of tokens (and at least one)
STATED_FOR = 86_400.0  # a limit stated in a 429 is trusted this long
PRESSED_FOR = 60.0  # grow only if requests waited for the pacer this recently
MAX_PAUSE = 900.0  # a longer Retry-After is taken as this


class Clock(Protocol):
    """Where the pacer's time comes from (a test drives its own)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Unix time (replicas on different hosts compare their times through the database) and asyncio's sleep."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Paced(Exception):  # noqa: N818 - a signal, not an error: the job waits for its turn again
    """OpenAI answered 429 (a rate limit, not an exhausted quota): the job goes back to the queue, at its
    place, and is tried again when the pacer allows. Nothing was generated and nothing is billed."""


class Pacing(Protocol):
    """What the worker, the job runner and the OpenAI side ask of a pacer."""

    def now(self) -> float: ...

    async def take(self, want: int) -> int: ...

    async def try_take(self, want: int) -> int: ...

    async def give_back(self, count: int) -> None: ...

    def ready(self) -> int: ...

    async def accepted(self, headers: Mapping[str, str], *, sent_at: float) -> None: ...

    async def rejected(self, headers: Mapping[str, str], *, code: str | None, message: str,
                       sent_at: float) -> bool: ...


class Unpaced:
    """No pacing: every take is granted at once (for runners built without a pacer)."""

    def now(self) -> float:
        return time.time()

    async def take(self, want: int) -> int:
        return want

    async def try_take(self, want: int) -> int:
        return want

    async def give_back(self, count: int) -> None:
        return None

    def ready(self) -> int:
        return 1 << 30

    async def accepted(self, headers: Mapping[str, str], *, sent_at: float) -> None:
        return None

    async def rejected(self, headers: Mapping[str, str], *, code: str | None, message: str, sent_at: float) -> bool:
        return False


class Pacer:
    """The account's image limit, kept by every worker task and replica through one bucket."""

    def __init__(self, limits: Limits, *, per_minute: int | None, clock: Clock | None = None, name: str = BUCKET):
        self._limits = limits
        self._clock: Clock = clock or SystemClock()
        self._name = name
        self._per_minute = per_minute
        self._setting_cap = per_minute * MARGIN if per_minute else CEILING
        self._requests_cap = math.inf  # from x-ratelimit-limit-requests: each turn is one request
        self._seen: Bucket | None = None  # the bucket as the last statement left it
        self._pressed_at = self._pressed_before = -math.inf  # when a request last had to wait for its token
        self._waiting = 0  # takes waiting for a token now
        self._accepted_unpressed: float | None = None  # when a request accepted while none waited was sent
        self._changed = asyncio.Event()  # set (and replaced) when the bucket changed for the better
        self._ensuring = asyncio.Lock()

    @property
    def cap(self) -> float:
        return min(self._setting_cap, self._requests_cap * MARGIN)

    @property
    def rate(self) -> float | None:
        """Images a minute paced at now, as last seen (None before the first look)."""
        return None if self._seen is None else min(self._seen.rate, self.cap)

    def now(self) -> float:
        return self._clock.now()

    def _args(self) -> dict[str, Any]:
        return {"now": self._clock.now(), "cap": self.cap, "burst": BURST_SECONDS}

    async def _ensure(self) -> None:
        if self._seen is not None:
            return
        async with self._ensuring:
            if self._seen is not None:
                return
            now, start = self._clock.now(), self._setting_cap if self._per_minute else START
            bucket = await self._limits.ensure(self._name, rate=start, tokens=max(1.0, start * BURST_SECONDS / 60),
                                               now=now, probing=self._per_minute is None)
            if self._per_minute:
                wanted = min(self._setting_cap, self._stated_rate(bucket, now))
                if not math.isclose(bucket.rate, wanted):  # a new setting, or one that was changed
                    bucket = await self._limits.set_rate(self._name, rate=wanted, probing=False,
                                                         **self._args()) or bucket
            self._seen = bucket
            log.info("pacing OpenAI image requests at %.1f a minute (%s)", min(bucket.rate, self.cap),
                     "OPENAI_IMAGES_PER_MINUTE" if self._per_minute else
                     "learned" if not bucket.probing else "unknown limit: starting low")

    @staticmethod
    def _stated_rate(bucket: Bucket, now: float) -> float:
        """What a limit OpenAI stated lately allows, or infinity."""
        if bucket.stated is None or bucket.stated_at is None or now - bucket.stated_at >= STATED_FOR:
            return math.inf
        return bucket.stated * MARGIN

    # -- tokens -----------------------------------------------------------------------------------------------

    async def take(self, want: int) -> int:
        """Wait until the bucket holds a token, then take up to `want`. Returns how many were taken (>= 1)."""
        if want <= 0:
            return 0
        await self._ensure()
        waited = False
        while True:
            bucket = self._seen = await self._limits.take(self._name, want=want, **self._args())
            if bucket.granted:
                if waited:  # demand met the rate (unless the tokens come back unused: see give_back)
                    self._pressed_before, self._pressed_at = self._pressed_at, self._clock.now()
                return bucket.granted
            waited = True
            if self._accepted_unpressed is not None:  # a request went through just before demand met the rate
                sent_at, self._accepted_unpressed = self._accepted_unpressed, None
                if await self._grow(sent_at):
                    continue
            self._waiting += 1
            try:
                await self._nap(self._due(bucket, self._clock.now()))
            finally:
                self._waiting -= 1

    async def _nap(self, seconds: float) -> None:
        """Sleep `seconds`, or until this process sees the bucket change for the better (a faster rate, tokens
        given back), whichever comes first."""
        sleep = asyncio.ensure_future(self._clock.sleep(seconds))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleep, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            changed.cancel()

    def _better(self, bucket: Bucket | None) -> None:
        if bucket is not None:
            self._seen = bucket
            self._changed.set()
            self._changed = asyncio.Event()

    async def try_take(self, want: int) -> int:
        """Take up to `want` tokens if the bucket holds any now; never waits."""
        if want <= 0:
            return 0
        await self._ensure()
        bucket = self._seen = await self._limits.take(self._name, want=want, **self._args())
        return bucket.granted

    async def give_back(self, count: int) -> None:
        """Tokens taken for requests that did not go after all (no job was there to take). Never raises (a
        token lost only slows the next request a little)."""
        if count <= 0:
            return
        self._pressed_at = self._pressed_before  # the wait was for nothing: no request was held back
        try:
            self._better(await self._limits.give_back(self._name, count=count, **self._args()))
        except Exception:
            log.exception("pacing: could not give %d token(s) back", count)

    def _pressed(self) -> bool:
        """Are requests held back by the rate? (Only then does an accepted request say the rate could grow.)"""
        return self._waiting > 0 or self._clock.now() - self._pressed_at < PRESSED_FOR

    def _due(self, bucket: Bucket, now: float) -> float:
        """Seconds until the bucket holds a whole token, as far as this process knows."""
        rate = min(bucket.rate, self.cap)
        return max(0.001, max(0.0, bucket.paused_until - now) + max(0.0, 1.0 - bucket.tokens) * 60.0 / rate)

    def ready(self) -> int:
        """How many requests could go right now, as far as this process last saw the bucket (for telling a
        waiting request its place: the database's queue is the order, this is how many of it start now)."""
        bucket, now = self._seen, self._clock.now()
        if bucket is None:
            return 1
        if now < bucket.paused_until:
            return 0
        rate = min(bucket.rate, self.cap)
        capacity = max(1.0, rate * BURST_SECONDS / 60.0)
        elapsed = max(0.0, now - max(bucket.updated_at, bucket.paused_until))
        return int(min(capacity, bucket.tokens + elapsed * rate / 60.0) + 1e-9)

    # -- what OpenAI answered -------------------------------------------------------------------------------

    async def accepted(self, headers: Mapping[str, str], *, sent_at: float) -> None:
        """A turn was accepted: heed its rate-limit headers, and grow the rate if requests are waiting for
        it. Never raises (the turn goes on whatever happens here)."""
        try:
            await self._heed(headers)
            if self._pressed():
                await self._grow(sent_at)
            else:  # the rate is not what holds requests back, yet: if a request soon waits for it, grow then
                self._accepted_unpressed = sent_at
        except Exception:
            log.exception("pacing: could not record an accepted request")

    async def _grow(self, sent_at: float) -> bool:
        """A request sent at `sent_at` was accepted while others wait for the rate: raise the rate (towards the
        cap, or a limit OpenAI stated lately). Returns whether it rose."""
        bucket, now = self._seen, self._clock.now()
        if bucket is None:
            return False
        target = min(self.cap, self._stated_rate(bucket, now))
        if min(bucket.rate, self.cap) >= target:
            return False
        grown = await self._limits.grow(self._name, target=target, fast=FAST, slow=SLOW, sent_at=sent_at,
                                        **self._args())
        if grown is None:
            return False
        self._better(grown)
        log.debug("pacing OpenAI image requests at %.1f a minute", min(grown.rate, self.cap))
        return True

    async def rejected(self, headers: Mapping[str, str], *, code: str | None, message: str, sent_at: float) -> bool:
        """OpenAI answered 429 to a turn. Returns True if the job should wait for its turn again (a rate
        limit), False if waiting cannot help (an exhausted quota, or a limit of 0 images)."""
        if code == "insufficient_quota":
            return False
        images, requests = stated_limits(message)
        if images is not None and images <= 0:
            log.error("OpenAI says this account may make no images (%s)", message)
            return False
        if requests:
            self._requests_cap = min(self._requests_cap, requests)
        wait = retry_after(headers, self._clock.now())
        if wait is None:
            wait = try_again_in(message) or 0.0  # the refill spaces the next request anyway
        try:
            await self._ensure()
            now = self._clock.now()
            bucket = self._seen = await self._limits.cut(
                self._name, stated=images, margin=MARGIN, factor=CUT, floor=FLOOR, sent_at=sent_at,
                until=now + min(wait, MAX_PAUSE), **self._args())
        except Exception:  # the job waits for its turn all the same; the next 429 may teach what this one could not
            log.exception("pacing: could not record a 429")
            return True
        log.warning("OpenAI answered 429 (%s); pacing image requests at %.1f a minute, the next in %.1f s",
                    code or "rate limit", min(bucket.rate, self.cap), self._due(bucket, now))
        return True

    async def _heed(self, headers: Mapping[str, str]) -> None:
        limit = _number(headers.get("x-ratelimit-limit-requests"))
        if limit:
            self._requests_cap = limit
        now, until = self._clock.now(), None
        for kind in ("requests", "tokens"):
            if _number(headers.get(f"x-ratelimit-remaining-{kind}")) == 0:
                reset = duration(headers.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    until = max(until or 0.0, now + min(reset, MAX_PAUSE))
        if until is not None:
            await self._ensure()
            self._seen = await self._limits.pause(self._name, until=until) or self._seen


# -- reading OpenAI's answers ------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_IMAGES_LIMIT = re.compile(r"images per min(?:ute)?\b.{0,200}?\blimit:?\s*(\d+(?:\.\d+)?)", re.I | re.S)
_REQUESTS_LIMIT = re.compile(r"requests per min(?:ute)?\b.{0,200}?\blimit:?\s*(\d+(?:\.\d+)?)", re.I | re.S)
_TRY_AGAIN = re.compile(r"try again in\s+((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)", re.I)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def duration(text: str | None) -> float | None:
    """An `x-ratelimit-reset-*` value in seconds: "1s", "6m0s", "59.1s", "17ms", "1h2m"."""
    if not text:
        return None
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return _number(text)
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, else `retry-after` (seconds, or an HTTP date), as the SDK reads
    them; None if neither says."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None and math.isfinite(ms) and ms >= 0:
        return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def stated_limits(message: str) -> tuple[float | None, float | None]:
    """The images-per-minute and requests-per-minute limits a 429's message states, if it does. OpenAI writes
    "Rate limit exceeded for images per minute in organization org-x. Limit: 5/1min. Current: 6/1min." and
    "Rate limit reached for gpt-image-2 in organization org-x on images per min (IPM): Limit 5, Used 5,
    Requested 1. Please try again in 12s."."""
    images = _IMAGES_LIMIT.search(message or "")
    requests = _REQUESTS_LIMIT.search(message or "")
    return (float(images.group(1)) if images else None, float(requests.group(1)) if requests else None)


def try_again_in(message: str) -> float | None:
    found = _TRY_AGAIN.search(message or "")
    return duration(found.group(1)) if found else None


async def no_sdk_retry_on_429(response: Any) -> None:
    """A response hook for the OpenAI client's HTTP client: a 429 to the request that starts a turn is not
    retried by the SDK (the pacer sends it again, in its turn), through the SDK's own `x-should-retry`
    signal. Every other answer keeps the SDK's retry policy."""
    request = response.request
    if response.status_code == 429 and request.method == "POST" and request.url.path.endswith("/responses"):
        response.headers["x-should-retry"] = "false"
