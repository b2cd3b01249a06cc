"""Budgets: what a request may spend before it is sent, and what was spent.

Limits come from the environment (BUDGET_USER_DAILY_USD, BUDGET_CHANNEL_DAILY_USD, BUDGET_WORKSPACE_MONTHLY_USD;
unset: no limit), under those admins set from Slack (the workspace's settings: each person's daily limit, the
workspace's monthly limit, every channel's daily limit; a channel's own settings: its daily limit), which are
read again for every reservation. Days and months are the workspace's (UTC unless an admin set a time zone with
`/imagine settings tz Europe/Paris`). Before a request reaches OpenAI its worst case (`Prices.worst_case`) is
reserved against every limit at once (`storage.spend`); a turn tried once more another way raises the
reservation to its own worst case first, if that is dearer. After the answer it is settled to what OpenAI
reported, or released when the request failed. Above CONFIRM_ABOVE_USD the requester is asked first, with a
button.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
import zoneinfo
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from bot.prices import MILLION, Prices
from storage.models import Job
from storage.settings import Settings
from storage.spend import Counter, Refused, Reservation, Spend, Tally, scopes

CONFIRM_ACTION = "easel.confirm"  # the action_id of the "Draw it" button (its value: the job's id)
TOP = 5  # users and channels an admin's usage lists


@dataclasses.dataclass(frozen=True)
class BudgetLimits:
    """Limits in micro-dollars (None: none)."""

    user_daily: int | None = None
    channel_daily: int | None = None
    workspace_monthly: int | None = None
    confirm_above: int | None = None


def micros(dollars: Decimal | str | None) -> int | None:
    if dollars is None:
        return None
    return int((Decimal(dollars) * MILLION).to_integral_value(rounding=ROUND_FLOOR))


def usd(amount: int, *, up: bool = False) -> str:
    """"$0.43": to the cent (a cost rounded up, what is left rounded down); below a cent, to a tenth of one."""
    dollars = Decimal(amount) / MILLION
    step = Decimal("0.001") if 0 < dollars < Decimal("0.01") else Decimal("0.01")
    return f"${dollars.quantize(step, rounding=ROUND_CEILING if up else ROUND_FLOOR)}"


@dataclasses.dataclass(frozen=True)
class Periods:
    """The workspace's day and month now, and when each ends (Unix seconds)."""

    zone: str
    day: str
    month: str
    day_ends: float
    month_ends: float


def periods(now: float, zone: str | None) -> Periods:
    tz = zoneinfo.ZoneInfo(zone) if zone else datetime.UTC
    local = datetime.datetime.fromtimestamp(now, tz)
    midnight = datetime.datetime.combine(local.date() + datetime.timedelta(days=1), datetime.time(), tz)
    first = (local.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
    next_month = datetime.datetime.combine(first.date(), datetime.time(), tz)
    return Periods(zone=zone or "UTC", day=local.date().isoformat(), month=local.strftime("%Y-%m"),
                   day_ends=midnight.timestamp(), month_ends=next_month.timestamp())


class NotSent(Exception):
    """The request is not sent to OpenAI (yet): `text` says why, to the requester."""

    def __init__(self, text: str, *, blocks: list[dict[str, Any]] | None = None):
        super().__init__(text)
        self.text = text
        self.blocks = blocks


class OverBudget(NotSent):
    def __init__(self, text: str, refused: Refused):
        super().__init__(text)
        self.refused = refused


class AwaitsConfirmation(NotSent):
    """Dearer than CONFIRM_ABOVE_USD: the job ends with a button; a click by its requester starts a copy."""


_NAMES = {"user": "your daily limit", "channel": "this channel's daily limit", "team": "the workspace's monthly limit"}


def _when(ts: float, zone: str) -> str:
    fallback = datetime.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(zone) if zone != "UTC" else datetime.UTC)
    return f"<!date^{int(ts)}^{{date_short_pretty}} at {{time}}|{fallback:%Y-%m-%d %H:%M} {zone}>"


def refusal_text(refused: Refused, *, worst: int, p: Periods, held: int = 0) -> str:
    """`held`: what was set aside for the request's first try, when it is a retry that may cost more."""
    kind = refused.counter.scope.split(":", 1)[0]
    resets = p.month_ends if kind == "team" else p.day_ends
    assert refused.counter.limit_micros is not None
    retry = (f"tried once more another way, this request may cost up to {usd(worst, up=True)} "
             f"({usd(worst - held, up=True)} more than was set aside for it)" if held else
             f"this request may cost up to {usd(worst, up=True)}")
    return (f":no_entry: Not drawn: {retry}, more than is left of "
            f"{_NAMES[kind]} ({usd(refused.left_micros)} left of {usd(refused.counter.limit_micros)}). "
            f"It resets {_when(resets, p.zone)}.")


def confirm_blocks(job_id: int, worst: int) -> tuple[str, list[dict[str, Any]]]:
    label = f"Draw it, up to {usd(worst, up=True)}"
    text = f":moneybag: This one may cost up to {usd(worst, up=True)}. Nothing is spent until you click."
    return text, [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": "easel.confirm", "elements": [
            {"type": "button", "action_id": CONFIRM_ACTION, "text": {"type": "plain_text", "text": label},
             "style": "primary", "value": str(job_id)}]},
    ]


class Budgets:
    def __init__(self, *, spend: Spend, limits: BudgetLimits, prices: Prices, chat_model: str,
                 clock: Callable[[], float] = time.time, settings: Settings | None = None):
        """`limits`: the environment's. `settings`: the limits admins set in Slack, over those."""
        self._spend = spend
        self._settings = settings
        self.limits = limits
        self._prices = prices
        self._chat_model = chat_model
        self._clock = clock

    async def periods(self, team_id: str) -> Periods:
        return periods(self._clock(), await self._spend.time_zone(team_id))

    def worst_case(self, tool: Mapping[str, Any], *, chat_model: str | None, input_images: int) -> int:
        return self._prices.worst_case(
            chat_model=chat_model or self._chat_model, image_model=str(tool.get("model") or ""),
            quality=str(tool.get("quality") or "auto"), size=str(tool.get("size") or "auto"),
            previews=int(tool.get("partial_images") or 0), input_images=input_images)

    async def limits_for(self, team_id: str, channel_id: str) -> BudgetLimits:
        """The limits in force in a channel ("": the workspace's alone), read now: each set in Slack (the
        channel's daily limit, else the workspace's for every channel; each person's daily limit and the
        workspace's monthly limit, in the workspace's settings) over the environment's."""
        if self._settings is None:
            return self.limits
        place = await self._settings.place(team_id, channel_id)
        ws, env = place.workspace, self.limits

        def first(mine: int | None, default: int | None) -> int | None:
            return mine if mine is not None else default

        return dataclasses.replace(
            env, user_daily=first(ws.user_daily_limit_micros, env.user_daily),
            channel_daily=first(place.effective.daily_limit_micros, env.channel_daily),
            workspace_monthly=first(ws.workspace_monthly_limit_micros, env.workspace_monthly))

    async def channel_daily(self, team_id: str, channel_id: str) -> int | None:
        """The channel's daily limit: its own (or its workspace's for every channel), else the environment's."""
        return (await self.limits_for(team_id, channel_id)).channel_daily

    async def _counters(self, job: Job, day: str, month: str) -> list[Counter]:
        user, channel, team = scopes(job.team_id, job.channel_id, job.user_id)
        limits = await self.limits_for(job.team_id, job.channel_id)
        found = [(user, day, limits.user_daily), (channel, day, limits.channel_daily),
                 (team, month, limits.workspace_monthly)]
        return [Counter(s, period, limit) for s, period, limit in found if limit is not None]

    async def before_send(self, job: Job, *, tool: Mapping[str, Any], chat_model: str | None, input_images: int,
                          confirmed: bool) -> Reservation:
        """Reserve the request's worst case, or raise NotSent (over a limit; or it needs the requester's click
        first). A job that reserved before (a run taken again, a turn tried once more another way) keeps its
        reservation, raised first to this turn's worst case if that is dearer: OverBudget if the difference
        does not fit (the reservation stays as it was, to be released with the job)."""
        worst = self.worst_case(tool, chat_model=chat_model, input_images=input_images)
        held = await self._spend.reservation(job.id)
        if held is not None and held.state != "released":
            if held.state != "reserved" or worst <= held.reserved_micros:
                return held
            raised = await self._spend.raise_to(job.id, amount_micros=worst,
                                                limits=await self._counters(job, held.day, held.month))
            if isinstance(raised, Refused):
                p = await self.periods(job.team_id)
                raise OverBudget(refusal_text(raised, worst=worst, p=p, held=held.reserved_micros), raised)
            if raised is not None:
                return raised
        if self.limits.confirm_above is not None and worst > self.limits.confirm_above and not confirmed:
            text, blocks = confirm_blocks(job.id, worst)
            raise AwaitsConfirmation(text, blocks=blocks)
        p = await self.periods(job.team_id)
        found = await self._spend.reserve(
            job_id=job.id, team_id=job.team_id, channel_id=job.channel_id, user_id=job.user_id,
            model=str(tool.get("model") or "unknown"), day=p.day, month=p.month, amount_micros=worst,
            limits=await self._counters(job, p.day, p.month), now=self._clock())
        if isinstance(found, Refused):
            raise OverBudget(refusal_text(found, worst=worst, p=p), found)
        return found

    async def settle(self, job_id: int, *, cost_micros: int | None, failed: bool) -> None:
        """After the answer: what it cost; a failure releases the hold, less what OpenAI billed for it."""
        await self._spend.settle(job_id, cost_micros=cost_micros or 0, released=failed)

    # -- seeing it --------------------------------------------------------------------------------------------

    async def usage(self, *, team_id: str, channel_id: str, user_id: str, admin: bool) -> str:
        p = await self.periods(team_id)
        limits = await self.limits_for(team_id, channel_id)
        user, channel, team = scopes(team_id, channel_id, user_id)
        t = await self._spend.tallies([(user, p.day), (channel, p.day), (team, p.month)])
        lines = [f"*Your spend* (days and months in {p.zone})"]
        lines += await self._lines("Today", await self._spend.by_model(team_id=team_id, user_id=user_id, day=p.day),
                                   t[(user, p.day)], limits.user_daily, p.day_ends, p.zone)
        month = await self._spend.by_model(team_id=team_id, user_id=user_id, month=p.month)
        lines += await self._lines("This month", month, None, None, p.month_ends, p.zone)
        if admin:
            lines.append("*This channel*")
            lines += await self._lines(
                "Today", await self._spend.by_model(team_id=team_id, channel_id=channel_id, day=p.day),
                t[(channel, p.day)], limits.channel_daily, p.day_ends, p.zone)
            lines.append("*The workspace*")
            lines += await self._lines(
                "This month", await self._spend.by_model(team_id=team_id, month=p.month), t[(team, p.month)],
                limits.workspace_monthly, p.month_ends, p.zone)
            for by, label, mention in (("user_id", "Top users", "<@{}>"), ("channel_id", "Top channels", "<#{}>")):
                top = await self._spend.top(team_id=team_id, month=p.month, by=by, limit=TOP)
                if top:
                    lines.append(f"{label} this month: " + ", ".join(
                        f"{mention.format(who)} {usd(amount, up=True)}" for who, amount in top))
        return "\n".join(lines)

    async def summary(self, *, team_id: str, user_id: str, admin: bool) -> tuple[list[str], list[str]]:
        """App Home's figures: the person's spend and what is left; for admins, the workspace's month."""
        p = await self.periods(team_id)
        limits = await self.limits_for(team_id, "")
        user, _, team = scopes(team_id, "", user_id)
        t = await self._spend.tallies([(user, p.day), (team, p.month)])
        mine = await self._lines("Today", await self._spend.by_model(team_id=team_id, user_id=user_id, day=p.day),
                                 t[(user, p.day)], limits.user_daily, p.day_ends, p.zone)
        mine += await self._lines("This month", await self._spend.by_model(team_id=team_id, user_id=user_id,
                                                                            month=p.month), None, None,
                                  p.month_ends, p.zone)
        if not admin:
            return mine, []
        workspace = await self._lines("This month", await self._spend.by_model(team_id=team_id, month=p.month),
                                      t[(team, p.month)], limits.workspace_monthly, p.month_ends, p.zone)
        for by, label, mention in (("user_id", "Top users", "<@{}>"), ("channel_id", "Top channels", "<#{}>")):
            top = await self._spend.top(team_id=team_id, month=p.month, by=by, limit=TOP)
            if top:
                workspace.append(f"• {label}: " + ", ".join(
                    f"{mention.format(who)} {usd(amount, up=True)}" for who, amount in top))
        return mine, workspace

    async def _lines(self, label: str, models: dict[str, int], tally: Tally | None, limit: int | None,
                     ends: float, zone: str) -> list[str]:
        total = sum(models.values())
        detail = ", ".join(f"{m} {usd(a, up=True)}" for m, a in models.items()) or "nothing yet"
        line = f"• {label}: {usd(total, up=True)} ({detail})"
        if limit is not None and tally is not None:
            line += (f"; {usd(max(0, limit - tally.used_micros))} left of {usd(limit)}, "
                     f"resets {_when(ends, zone)}")
        elif tally is not None:
            line += "; no limit"
        return [line]

    async def set_time_zone(self, *, team_id: str, zone: str, by: str) -> str:
        """An admin's `/imagine settings tz <zone>`: the text to answer with."""
        name: str | None = zone.strip()
        if name is not None and name.upper() in ("UTC", "NONE", "RESET"):
            name = None
        elif name is not None:
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                return (f":warning: `{name}` is not a time zone I know. Use an IANA name like `Europe/Paris`, "
                        "or `UTC`.")
        before = await self._spend.time_zone(team_id)
        await self._spend.set_time_zone(team_id, name, by=by, now=self._clock())
        if self._settings is not None and before != name:
            await self._settings.record(team_id, "", field="time_zone", before=before, after=name, by=by,
                                        now=self._clock())
        return f"Days and months are now counted in {name or 'UTC'}."
