"""Spend against budgets: counters per scope and period, and one reservation per generate job.

A request's worst case is reserved against every counter that applies in ONE transaction: the job's reservation
row first, then each counter in a fixed order (sorted by scope and period), each a conditional UPDATE that adds
the amount only if it still fits under that counter's limit. On PostgreSQL each UPDATE locks its row until the
commit, and a concurrent UPDATE of the same row waits and then re-checks its condition against the committed
row (READ COMMITTED), so no two transactions can both fit into the last room; the fixed order keeps two of them
from waiting on each other. On SQLite every write goes through the one writer (and the file's one write lock).
If any counter does not fit, the whole transaction is rolled back: nothing is held.

Settling (the actual cost) and releasing (nothing, or what was billed) are one transaction each, and happen at
most once per reservation: the reservation's state moves from `reserved` only once.

A turn tried once more another way (a refusal that taught Easel something, bot.lineup) may cost more than the
first try could: its reservation is raised to the larger worst case before it is sent (`raise_to`), in the
same all-or-nothing way, so no retry can settle above what its limits held for it.

A reservation that no run will settle (its job gone, or finished without settling it, or held for longer than
`STALE_SECONDS`) is released by the worker's periodic purge (`release_stale`), keeping what OpenAI billed for
its job as recorded with the job's generations, so that the room it held comes back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from storage.database import Database
from storage.schema import budget_counters as counters
from storage.schema import budget_reservations as reservations
from storage.schema import generations, jobs, workspace_settings

RESERVED, SETTLED, RELEASED = "reserved", "settled", "released"
STALE_SECONDS = 86_400.0
"""A reservation held this long is released whatever its job is doing: no turn runs for a day (a turn is given
up after twice OPENAI_TIMEOUT; an answer Slack will not take, after PUBLISH_RETRY_SECONDS)."""
FINISHED = ("done", "failed")


@dataclasses.dataclass(frozen=True)
class Counter:
    """One budget a request counts against: its scope ("user:T:U", "channel:T:C", "team:T"), its period (a
    day "2026-12-01" or a month "2026-12"), and its limit in micro-dollars (None: counted, not limited)."""

    scope: str
    period: str
    limit_micros: int | None = None


@dataclasses.dataclass(frozen=True)
class Refused:
    """The first counter a request did not fit under, and what it held then (spent and reserved)."""

    counter: Counter
    used_micros: int

    @property
    def left_micros(self) -> int:
        assert self.counter.limit_micros is not None
        return max(0, self.counter.limit_micros - self.used_micros)


@dataclasses.dataclass(frozen=True)
class Reservation:
    job_id: int
    team_id: str
    channel_id: str
    user_id: str
    model: str
    day: str
    month: str
    reserved_micros: int
    cost_micros: int
    state: str
    fresh: bool = False  # reserved by this call (False: the job's reservation from before)


@dataclasses.dataclass(frozen=True)
class Tally:
    spent_micros: int = 0
    reserved_micros: int = 0

    @property
    def used_micros(self) -> int:
        return self.spent_micros + self.reserved_micros


class _DoesNotFit(Exception):
    def __init__(self, refused: Refused):
        self.refused = refused


def scopes(team_id: str, channel_id: str, user_id: str) -> tuple[str, str, str]:
    """The user's, the channel's and the workspace's scope names."""
    return f"user:{team_id}:{user_id}", f"channel:{team_id}:{channel_id}", f"team:{team_id}"


def _reservation(row: Any, *, fresh: bool = False) -> Reservation:
    m = row._mapping
    return Reservation(job_id=m["job_id"], team_id=m["team_id"], channel_id=m["channel_id"], user_id=m["user_id"],
                       model=m["model"], day=m["day"], month=m["month"], reserved_micros=int(m["reserved_micros"]),
                       cost_micros=int(m["cost_micros"]), state=m["state"], fresh=fresh)


class Spend:
    def __init__(self, db: Database):
        self._db = db
        c = counters.c
        scope, period = sa.bindparam("s_scope", type_=sa.String), sa.bindparam("s_period", type_=sa.String)
        amount, limit = sa.bindparam("s_amount", type_=sa.BigInteger), sa.bindparam("s_limit", type_=sa.BigInteger)
        this = sa.and_(c.scope == scope, c.period == period)
        self._ensure = db.insert(counters).values(scope=scope, period=period, spent_micros=0, reserved_micros=0) \
            .on_conflict_do_nothing(index_elements=["scope", "period"])
        self._add_within = (sa.update(counters).where(this, c.spent_micros + c.reserved_micros + amount <= limit)
                            .values(reserved_micros=c.reserved_micros + amount).returning(c.scope))
        self._add = sa.update(counters).where(this).values(reserved_micros=c.reserved_micros + amount)
        self._settle_counter = sa.update(counters).where(this).values(
            reserved_micros=c.reserved_micros - amount, spent_micros=c.spent_micros + sa.bindparam(
                "s_cost", type_=sa.BigInteger))
        self._tally = sa.select(c.spent_micros, c.reserved_micros).where(this)

    # -- reserving and settling -------------------------------------------------------------------------------

    def _hold(self, conn: sa.Connection, applying: Sequence[tuple[str, str]], amount: int,
              limited: dict[tuple[str, str], int | None]) -> None:
        """Add `amount` to each counter in `applying` (in that order), within its limit where it has one; raise
        _DoesNotFit at the first that has no room (the caller's transaction is then rolled back)."""
        for scope, period in applying:
            params = {"s_scope": scope, "s_period": period, "s_amount": amount}
            conn.execute(self._ensure, params)
            limit = limited.get((scope, period))
            if limit is None:
                conn.execute(self._add, params)
                continue
            if conn.execute(self._add_within, {**params, "s_limit": limit}).first() is None:
                tally = conn.execute(self._tally, params).one()
                raise _DoesNotFit(Refused(Counter(scope, period, limit),
                                          int(tally.spent_micros) + int(tally.reserved_micros)))

    async def reserve(self, *, job_id: int, team_id: str, channel_id: str, user_id: str, model: str, day: str,
                      month: str, amount_micros: int, limits: Sequence[Counter], now: float) -> Reservation | Refused:
        """Hold `amount_micros` against the user's and channel's `day` and the workspace's `month` (every one
        is counted; `limits` gives those that have a limit), all or nothing. A job that holds (or has settled)
        a reservation already gets that one back, and nothing more is held."""
        user, channel, team = scopes(team_id, channel_id, user_id)
        limited = {(x.scope, x.period): x.limit_micros for x in limits}
        applying = sorted([(channel, day), (team, month), (user, day)])
        row = {"job_id": job_id, "team_id": team_id, "channel_id": channel_id, "user_id": user_id, "model": model,
               "day": day, "month": month, "reserved_micros": amount_micros, "cost_micros": 0, "state": RESERVED,
               "created_at": now}
        insert = self._db.insert(reservations).values(**row).on_conflict_do_nothing(index_elements=["job_id"])
        r = reservations.c

        def work(conn: sa.Connection) -> Reservation:
            if conn.execute(insert).rowcount == 0:
                held = conn.execute(sa.select(reservations).where(r.job_id == job_id)
                                    .with_for_update()).one()
                if held.state != RELEASED:
                    return _reservation(held)
                conn.execute(sa.update(reservations).where(r.job_id == job_id).values(**row))
            self._hold(conn, applying, amount_micros, limited)
            return Reservation(**{k: v for k, v in row.items() if k != "created_at"}, fresh=True)

        try:
            return await self._db.txn(work)
        except _DoesNotFit as e:
            return e.refused

    async def raise_to(self, job_id: int, *, amount_micros: int, limits: Sequence[Counter]
                       ) -> Reservation | Refused | None:
        """Raise the job's held reservation to `amount_micros` (a dearer retry's worst case), holding the
        difference against the same counters (the reservation's own day and month) within `limits`, all or
        nothing. A reservation that holds as much already, or is no longer held, is returned as it is; None:
        the job has none."""
        r = reservations.c
        limited = {(x.scope, x.period): x.limit_micros for x in limits}

        def work(conn: sa.Connection) -> Reservation | None:
            row = conn.execute(sa.select(reservations).where(r.job_id == job_id).with_for_update()).first()
            if row is None:
                return None
            held = _reservation(row)
            if held.state != RESERVED or held.reserved_micros >= amount_micros:
                return held
            user, channel, team = scopes(held.team_id, held.channel_id, held.user_id)
            self._hold(conn, sorted([(channel, held.day), (team, held.month), (user, held.day)]),
                       amount_micros - held.reserved_micros, limited)
            conn.execute(sa.update(reservations).where(r.job_id == job_id).values(reserved_micros=amount_micros))
            return dataclasses.replace(held, reserved_micros=amount_micros, fresh=True)

        try:
            return await self._db.txn(work)
        except _DoesNotFit as e:
            return e.refused

    async def settle(self, job_id: int, *, cost_micros: int, released: bool = False) -> Reservation | None:
        """The job's reservation becomes what it cost (`released`: the request failed; the cost is what was
        billed for it, often nothing). Once only: None if there was no reservation held."""
        return await self._db.txn(lambda conn: self._settle(conn, job_id, cost_micros, released))

    def _settle(self, conn: sa.Connection, job_id: int, cost_micros: int, released: bool) -> Reservation | None:
        r = reservations.c
        row = conn.execute(sa.update(reservations).where(r.job_id == job_id, r.state == RESERVED)
                           .values(state=RELEASED if released else SETTLED, cost_micros=cost_micros)
                           .returning(*reservations.c)).first()
        if row is None:
            return None
        held = _reservation(row)
        user, channel, team = scopes(held.team_id, held.channel_id, held.user_id)
        for scope, period in sorted([(channel, held.day), (team, held.month), (user, held.day)]):
            conn.execute(self._settle_counter, {"s_scope": scope, "s_period": period,
                                                "s_amount": held.reserved_micros, "s_cost": held.cost_micros})
        return held

    async def release_stale(self, *, now: float, older_than: float = STALE_SECONDS, batch: int = 500) -> int:
        """Release the reservations no run will settle: those whose job is gone or finished (done or failed)
        without settling, and those held for longer than `older_than` seconds. Each keeps what OpenAI billed
        for its job, as recorded with its generations (nothing, when none is). Batch after batch, each
        reservation in a short transaction of its own; returns how many were released."""
        r, j, g = reservations.c, jobs.c, generations.c
        stale = (sa.select(r.job_id).select_from(reservations.outerjoin(jobs, j.id == r.job_id))
                 .where(r.state == RESERVED,
                        sa.or_(j.id.is_(None), j.status.in_(FINISHED), r.created_at < now - older_than))
                 .order_by(r.job_id).limit(batch))
        billed = sa.select(sa.func.coalesce(sa.func.sum(g.cost_micros), 0)).where(
            g.job_id == sa.bindparam("b_job", type_=sa.Integer)).scalar_subquery()
        released = 0
        while True:
            found = await self._db.read(lambda conn: list(conn.execute(stale).scalars()))
            for job_id in found:
                def work(conn: sa.Connection, job_id: int = job_id) -> bool:
                    cost = conn.execute(sa.select(billed), {"b_job": job_id}).scalar() or 0
                    return self._settle(conn, job_id, int(cost), True) is not None

                released += bool(await self._db.txn(work))
            if len(found) < batch:
                return released

    async def reservation(self, job_id: int) -> Reservation | None:
        def work(conn: sa.Connection) -> Reservation | None:
            row = conn.execute(sa.select(reservations).where(reservations.c.job_id == job_id)).first()
            return None if row is None else _reservation(row)

        return await self._db.read(work)

    # -- what was spent ---------------------------------------------------------------------------------------

    async def tallies(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Tally]:
        """Each (scope, period)'s counter (zero if nothing was counted there yet)."""
        def work(conn: sa.Connection) -> dict[tuple[str, str], Tally]:
            out = {}
            for scope, period in keys:
                row = conn.execute(self._tally, {"s_scope": scope, "s_period": period}).first()
                out[(scope, period)] = Tally() if row is None else Tally(int(row[0]), int(row[1]))
            return out

        return await self._db.read(work)

    async def by_model(self, *, team_id: str, user_id: str | None = None, channel_id: str | None = None,
                       day: str | None = None, month: str | None = None) -> dict[str, int]:
        """Settled cost by image model (with what is reserved on its way), for a user, a channel or the whole
        workspace, in a day or a month."""
        r = reservations.c
        where = [r.team_id == team_id, r.state != RELEASED]
        where += [r.user_id == user_id] if user_id else []
        where += [r.channel_id == channel_id] if channel_id else []
        where += [r.day == day] if day else []
        where += [r.month == month] if month else []
        amount = sa.case((r.state == RESERVED, r.reserved_micros), else_=r.cost_micros)
        stmt = sa.select(r.model, sa.func.sum(amount)).where(*where).group_by(r.model).order_by(r.model)

        def work(conn: sa.Connection) -> dict[str, int]:
            return {m: int(total or 0) for m, total in conn.execute(stmt)}

        return await self._db.read(work)

    async def top(self, *, team_id: str, month: str, by: str, limit: int = 5) -> list[tuple[str, int]]:
        """The workspace's biggest spenders this month: `by` is "user_id" or "channel_id"."""
        r = reservations.c
        column = r.user_id if by == "user_id" else r.channel_id
        total = sa.func.sum(sa.case((r.state == RESERVED, r.reserved_micros), else_=r.cost_micros))
        stmt = (sa.select(column, total).where(r.team_id == team_id, r.month == month, r.state != RELEASED)
                .group_by(column).order_by(total.desc(), column).limit(limit))

        def work(conn: sa.Connection) -> list[tuple[str, int]]:
            return [(who, int(t or 0)) for who, t in conn.execute(stmt)]

        return await self._db.read(work)

    # -- the workspace's time zone ----------------------------------------------------------------------------

    async def time_zone(self, team_id: str) -> str | None:
        stmt = sa.select(workspace_settings.c.time_zone).where(workspace_settings.c.team_id == team_id)
        return await self._db.read(lambda conn: conn.execute(stmt).scalar())

    async def set_time_zone(self, team_id: str, time_zone: str | None, *, by: str, now: float) -> None:
        values = {"team_id": team_id, "time_zone": time_zone, "updated_by": by, "updated_at": now}
        stmt = self._db.insert(workspace_settings).values(**values).on_conflict_do_update(
            index_elements=["team_id"], set_={k: v for k, v in values.items() if k != "team_id"})
        await self._db.txn(lambda conn: conn.execute(stmt))
