"""Slack's rate limits, kept by the whole deployment: a budget per workspace and method.

Slack limits each Web API method per workspace per app by tier (Tier 2: 20 calls a minute, Tier 3: 50,
Tier 4: 100) and `chat.postMessage` to about one message a second per channel. A burst of requests would
meet 429s everywhere (each one a retry after `Retry-After`, and answers late), so every call Easel makes in a
workspace first takes a token from that method's bucket in the database (`storage.limits`), shared by every
worker task of every replica, at 95% of the tier.

What matters most gets the tokens first:
- `RESULT` (an image, an answer, a failure, the look-ups that keep them exactly once) waits for its token;
- `SIGN` (the first sign of work: the reaction, the status message) waits half a second at most, then goes
  without (the status message or the reaction is the sign instead);
- `CLEANUP` (taking a sign or a status message down, deleting previews) takes only what leaves a fifth of the
  bucket to the above, and waits as long as it takes (after the job has ended: `bot.cleanup`);
- `COSMETIC` (moving queue places, elapsed time) takes only what leaves 85% of the bucket (what a method's
  budget has to spare: under load it gets nothing, and nothing while a result here waits for that method),
  and never waits: a status update that finds no token is skipped, and the next one shows the news
  (coalesced, not queued);
- `PREVIEW` (a partial image's upload, which takes the two upload calls a final image needs) likewise, but
  only from a bucket at least 95% full: a burst's previews do not delay its results.

Results and signs take a few tokens at once and keep the spare ones in this process for a moment, so a
burst costs the database one statement per few calls. A 429 Slack sends all the same (another app's calls
do not count against Easel's, but Slack's own figures are approximate) pauses the bucket until its
`Retry-After` for every replica.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import logging
from collections.abc import Mapping
from typing import Any

from bot.pacing import Clock, SystemClock
from storage.limits import Bucket, Limits

log = logging.getLogger(__name__)

TIER_2, TIER_3, TIER_4 = 20, 50, 100  # calls a minute per workspace, Slack's published tiers
TIERS: Mapping[str, int] = {
    "reactions.add": TIER_3,
    "reactions.remove": TIER_2,
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": TIER_4,
    "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
    "files.info": TIER_4,
    "files.delete": TIER_3,
    "conversations.replies": TIER_3,
    "conversations.history": TIER_3,
    "users.info": TIER_4,
    "usergroups.list": TIER_2,
    "usergroups.users.list": TIER_2,
    "views.open": TIER_4,
    "views.publish": TIER_4,
    "views.update": TIER_4,
}
POST_METHOD = "chat.postMessage"
POST_PER_CHANNEL = 60  # chat.postMessage: about one a second in each channel...
POST_CHANNEL_BURST = 3.0  # ... with a short burst (seconds' worth)
POST_PER_WORKSPACE = 600  # ... and a workspace-wide cap (Slack says "several hundred a minute")
MARGIN = 0.95  # of each published figure (a burst of uploads at 90% would take 1.2x what the tier allows)
BURST = 60.0  # a tier's bucket holds a minute's worth
SPARE_FOR = 2.0  # seconds the spare tokens of a batch are kept in this process
IDLE_FOR = 3600.0  # a bucket untouched this long is forgotten (it would be full)


# The workspace whose work this task is doing (set for each job): its budgets are the ones calls count against.
CURRENT_TEAM: contextvars.ContextVar[str | None] = contextvars.ContextVar("easel-slack-team", default=None)


class Priority(enum.IntEnum):
    RESULT = 0
    SIGN = 1
    CLEANUP = 2
    COSMETIC = 3
    PREVIEW = 4  # a partial image's upload: two upload calls a result would need, so only from a full bucket


@dataclasses.dataclass(frozen=True)
class _Rule:
    keep: float  # the share of the bucket left for the priorities above
    wait: float | None  # seconds it may wait for a token (None: as long as it takes)
    batch: bool  # takes a few tokens at once, keeping the spare ones for a moment


RULES: Mapping[Priority, _Rule] = {
    Priority.RESULT: _Rule(keep=0.0, wait=None, batch=True),
    Priority.SIGN: _Rule(keep=0.0, wait=0.5, batch=True),
    Priority.CLEANUP: _Rule(keep=0.2, wait=None, batch=False),  # (in the background: `bot.cleanup`)
    Priority.COSMETIC: _Rule(keep=0.85, wait=0.0, batch=False),
    Priority.PREVIEW: _Rule(keep=0.95, wait=0.0, batch=False),
}


@dataclasses.dataclass(frozen=True)
class _Limit:
    name: str
    rate: float  # a minute
    burst: float  # seconds' worth

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * self.burst / 60.0)


def _due(bucket: Bucket, limit: _Limit, now: float, *, above: float) -> float:
    """Seconds until the bucket holds a token above `above`: it refills at `rate` a minute, and not while
    paused."""
    return max(bucket.paused_until - now, 0.0) + max(0.0, above + 1.0 - bucket.tokens) * 60.0 / max(limit.rate, 1e-6)


class SlackBudget:
    """Admits Slack calls within each workspace's budgets (see the module's doc)."""

    def __init__(self, limits: Limits, *, tiers: Mapping[str, int] = TIERS, margin: float = MARGIN,
                 per_channel: int = POST_PER_CHANNEL, per_workspace: int = POST_PER_WORKSPACE,
                 on_limited: Any = None, clock: Clock | None = None):
        self._limits = limits
        self._clock: Clock = clock or SystemClock()
        self._tiers = dict(tiers)
        self._margin = margin
        self._per_channel = per_channel
        self._per_workspace = per_workspace
        self._on_limited = on_limited  # hears of each 429 (method): for the metrics
        self._ensured: set[str] = set()
        self._spare: dict[str, tuple[int, float]] = {}  # bucket -> (tokens, until when they may be used)
        self._waiting: dict[str, int] = {}  # bucket -> results and signs waiting for a token of it here
        self._dry: dict[str, float] = {}  # bucket -> when its next token is due, as its last empty take said
        self.skipped = 0  # calls that went without (cosmetic ones, or signs that found no token)

    def _limits_for(self, team: str, method: str, channel: str | None) -> list[_Limit]:
        if method == POST_METHOD:
            found = [_Limit(f"slack:{team}:{method}", self._per_workspace * self._margin, BURST)]
            if channel:
                found.append(_Limit(f"slack:{team}:{method}:{channel}", self._per_channel * self._margin,
                                    POST_CHANNEL_BURST))
            return found
        tier = self._tiers.get(method)
        return [] if tier is None else [_Limit(f"slack:{team}:{method}", tier * self._margin, BURST)]

    async def admit(self, team: str | None, method: str, priority: Priority, *, channel: str | None = None,
                    wait: bool = True) -> bool:
        """Take the call's tokens (every bucket it counts against); False when it is to go without. A method
        with no published limit, or a call outside any workspace's work, is admitted as it is. `wait=False`:
        only if the tokens are there now."""
        if team is None:
            return True
        taken: list[_Limit] = []
        for limit in self._limits_for(team, method, channel):
            if await self._take(limit, priority, wait=wait):
                taken.append(limit)
                continue
            for other in taken:  # the call is not made: what it took from the other buckets goes back
                await self._give_back(other)
            self.skipped += 1
            log.debug("slack %s (%s) skipped: no token in %s", method, priority.name, limit.name)
            return False
        return True

    async def _ensure(self, limit: _Limit, now: float) -> None:
        if limit.name not in self._ensured:
            await self._limits.ensure(limit.name, rate=limit.rate, tokens=limit.capacity, now=now, probing=False)
            self._ensured.add(limit.name)

    async def _take(self, limit: _Limit, priority: Priority, *, wait: bool = True) -> bool:
        rule = RULES[priority]
        if not wait:
            rule = dataclasses.replace(rule, wait=0.0)
        now = self._clock.now()
        if rule.batch and self._use_spare(limit.name, now):
            return True
        await self._return_expired(limit, now)
        if priority >= Priority.COSMETIC and self._waiting.get(limit.name):
            return False  # results are waiting for this method: nothing to spare
        if rule.wait is not None and now + rule.wait < self._dry.get(limit.name, 0.0):
            return False  # the bucket was found empty, and no token comes within this call's wait
        await self._ensure(limit, now)
        want = max(1, int(limit.capacity // 20)) if rule.batch else 1
        give_up = None if rule.wait is None else now + rule.wait
        while True:
            now = self._clock.now()
            try:
                bucket = await self._limits.take(limit.name, want=want, now=now, cap=limit.rate,
                                                 burst=limit.burst, keep=rule.keep * limit.capacity)
            except LookupError:  # forgotten while idle (`forget_idle`): made again, full
                self._ensured.discard(limit.name)
                await self._ensure(limit, now)
                continue
            if bucket.granted > 0:
                if bucket.granted > 1:
                    count, until = self._spare.get(limit.name, (0, 0.0))
                    count = count if until > now else 0  # (expired ones were given back above)
                    self._spare[limit.name] = (count + bucket.granted - 1, now + SPARE_FOR)
                return True
            if rule.batch and self._use_spare(limit.name, now):  # another task's batch, taken meanwhile
                return True
            due = _due(bucket, limit, now, above=rule.keep * limit.capacity)
            # Until the next token of all, a call that may not wait for it need not ask the database again.
            self._dry[limit.name] = now + _due(bucket, limit, now, above=0.0)
            if give_up is not None and now + due > give_up:
                return False
            self._waiting[limit.name] = self._waiting.get(limit.name, 0) + 1
            try:
                await self._clock.sleep(min(max(due, 0.01), 5.0))
            finally:
                self._waiting[limit.name] -= 1

    async def _return_expired(self, limit: _Limit, now: float) -> None:
        """Spare tokens kept past their moment go back to the bucket, unused (Slack never saw them spent, so
        the bucket may have them again; it holds no more than its capacity all the same)."""
        count, until = self._spare.get(limit.name, (0, 0.0))
        if count > 0 and until <= now:
            del self._spare[limit.name]
            self._dry.pop(limit.name, None)
            await self._limits.give_back(limit.name, count=count, now=now, cap=limit.rate, burst=limit.burst)

    def _use_spare(self, name: str, now: float) -> bool:
        count, until = self._spare.get(name, (0, 0.0))
        if count <= 0 or until <= now:
            return False
        self._spare[name] = (count - 1, until)
        return True

    async def _give_back(self, limit: _Limit) -> None:
        self._dry.pop(limit.name, None)
        await self._limits.give_back(limit.name, count=1, now=self._clock.now(), cap=limit.rate, burst=limit.burst)

    async def forget_idle(self, *, now: float) -> int:
        """Forget the buckets of every workspace, method and channel idle for an hour (one row per channel
        Easel ever posted in would otherwise stay for ever)."""
        return await self._limits.forget_idle(prefix="slack:", before=now - IDLE_FOR, now=now)

    async def give_back(self, team: str | None, method: str) -> None:
        """One call's tokens, taken and then not used, go back to the workspace's bucket for `method`."""
        if team is None:
            return
        for limit in self._limits_for(team, method, None):
            await self._give_back(limit)

    async def limited(self, team: str | None, method: str, retry_after: float) -> None:
        """Slack answered 429 all the same: nothing more goes to that method of that workspace before
        `Retry-After` has passed, from any replica."""
        if self._on_limited is not None:
            self._on_limited(method)
        if team is None:
            return
        for limit in self._limits_for(team, method, None):
            self._spare.pop(limit.name, None)
            await self._ensure(limit, self._clock.now())
            await self._limits.pause(limit.name, until=self._clock.now() + retry_after)


class Unlimited:
    """No budgets (a terminal, or a runner built without one): every call is admitted."""

    skipped = 0

    async def admit(self, team: str | None, method: str, priority: Priority, *, channel: str | None = None,
                    wait: bool = True) -> bool:
        return True

    async def forget_idle(self, *, now: float) -> int:
        return 0

    async def give_back(self, team: str | None, method: str) -> None:
        return None

    async def limited(self, team: str | None, method: str, retry_after: float) -> None:
        return None


Budget = SlackBudget | Unlimited
