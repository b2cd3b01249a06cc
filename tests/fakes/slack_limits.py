"""Slack's Web API rate limits for the fake Slack, applied as Slack applies them (opt-in: `FakeSlack(rate_limits=
True)`, or a table of overrides).

Slack counts calls per method, per workspace (the one the token belongs to), per app. Each limit here is a token
bucket that holds `burst` calls and refills continuously at `per_minute`; a call finds a token or is refused with
HTTP 429, `Retry-After: <whole seconds until a token, at least 1>` and `{"ok": false, "error": "ratelimited"}`.
A refused call takes no token. `chat.postMessage` has a bucket per channel and one for the whole workspace, and
needs a token from both (taking neither when refused).

Which calls count: every call the fake would otherwise run, whatever its answer (`channel_not_found` counts too),
but not one refused before that (bad token, unknown method, a scripted fault). Methods not in the table are not
limited (`auth.test`, `apps.connections.open`, `oauth.v2.access`, ...).

Times come from `clock` (seconds; `time.monotonic` unless a test drives its own).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Limit", "Overrides", "RATE_LIMITS", "WORKSPACE_POSTS", "RateLimiter", "TIER_2", "TIER_3", "TIER_4",
           "table"]


@dataclass(frozen=True)
class Limit:
    """A bucket of `burst` calls (by default `per_minute`), refilled continuously at `per_minute`."""

    per_minute: float
    burst: float | None = None

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_minute if self.burst is None else self.burst)


# Slack's published figures (docs.slack.dev, "Rate limits" and each method's page): Tier 2 20+/min, Tier 3 50+/min,
# Tier 4 100+/min; chat.postMessage is "special": about one message a second per channel, short bursts allowed, and
# a workspace-wide cap (`WORKSPACE_POSTS`). auth.test and apps.connections.open are not limited (not in the table).
TIER_2 = Limit(20)
TIER_3 = Limit(50)
TIER_4 = Limit(100)
WORKSPACE_POSTS = "chat.postMessage:workspace"  # the key of chat.postMessage's workspace-wide bucket
RATE_LIMITS: dict[str, Limit] = {
    "chat.postMessage": Limit(60, burst=3),  # per channel
    WORKSPACE_POSTS: Limit(600),
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": TIER_4,
    "reactions.add": TIER_3,
    "reactions.remove": TIER_2,
    "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
    "files.info": TIER_4,
    "files.delete": TIER_3,
    "conversations.replies": TIER_3,
    "conversations.history": TIER_3,
    "users.info": TIER_4,
    "views.open": TIER_4,
    "views.publish": TIER_4,
    "views.update": TIER_4,
    "usergroups.users.list": TIER_2,
    "usergroups.list": TIER_2,
}

Overrides = Mapping[str, "Limit | float | None"]


def table(overrides: Overrides | None = None) -> dict[str, Limit]:
    """The published table with `overrides`: a number n is `Limit(n)` (n calls a minute, n at once), a `Limit`
    is taken as it is, None removes the method's limit."""
    out = dict(RATE_LIMITS)
    for method, value in (overrides or {}).items():
        if value is None:
            out.pop(method, None)
        elif isinstance(value, Limit):
            out[method] = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            out[method] = Limit(float(value))
        else:
            raise ValueError(f"rate limit of {method}: a positive number, a Limit or None, not {value!r}")
    return out


class _Bucket:
    __slots__ = ("limit", "tokens", "at")

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit, self.tokens, self.at = limit, limit.capacity, now

    def due_in(self, now: float) -> float:
        """Seconds until a token is there (0: one is)."""
        self.tokens = min(self.limit.capacity, self.tokens + max(0.0, now - self.at) * self.limit.per_minute / 60)
        self.at = max(self.at, now)
        if self.tokens + 1e-9 >= 1.0:
            return 0.0
        return (1.0 - self.tokens) * 60 / self.limit.per_minute


class RateLimiter:
    """The buckets of every (workspace, method) (and (workspace, chat.postMessage, channel)) seen so far."""

    def __init__(self, limits: Mapping[str, Limit], clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self._buckets: dict[tuple[str, ...], _Bucket] = {}

    def _bucket(self, key: tuple[str, ...], limit: Limit, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit:
            bucket = self._buckets[key] = _Bucket(limit, now)
        return bucket

    def admit(self, workspace: str, method: str, channel: str = "") -> int | None:
        """Take a token for this call: None if it may run, else the whole seconds of its Retry-After."""
        now = self.clock()
        buckets: list[_Bucket] = []
        limit = self.limits.get(method)
        if limit is not None:
            key = (workspace, method, channel) if method == "chat.postMessage" else (workspace, method)
            buckets.append(self._bucket(key, limit, now))
        if method == "chat.postMessage" and (whole := self.limits.get(WORKSPACE_POSTS)) is not None:
            buckets.append(self._bucket((workspace, WORKSPACE_POSTS), whole, now))
        wait = max((b.due_in(now) for b in buckets), default=0.0)
        if wait > 0:
            return max(1, math.ceil(wait - 1e-9))
        for b in buckets:
            b.tokens -= 1.0
        return None
