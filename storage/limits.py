"""Shared rate limiters: a token bucket per limited resource, in the database, so that every worker task of
every replica takes from the same one.

Each operation is one statement (an UPDATE ... RETURNING on the bucket's row): atomic on PostgreSQL (the row
is locked for the statement) and on SQLite (one writer at a time). The bucket refills continuously at `rate`
per minute (capped by the caller's `cap`) and holds at most `burst` seconds' worth (at least one token). A
pause (Retry-After) stops both granting and refilling until it ends. Times are the caller's clock, in seconds;
the rules for what to change when (how fast to grow, how far to fall) belong to the caller.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from storage.database import Database
from storage.schema import rate_limits as buckets

_EPSILON = 1e-9  # floating point: a bucket refilled to 0.9999999999 holds one token


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A bucket's row as a statement left it; `granted` is what that statement granted (a take's)."""

    name: str
    rate: float
    tokens: float
    updated_at: float
    paused_until: float
    probing: bool
    cut_at: float
    stated: float | None
    stated_at: float | None
    granted: int
    taken: int
    rejected: int


def _bucket(row: Any) -> Bucket:
    m = row._mapping
    return Bucket(
        name=m["name"], rate=float(m["rate"]), tokens=float(m["tokens"]), updated_at=float(m["updated_at"]),
        paused_until=float(m["paused_until"]), probing=bool(m["probing"]), cut_at=float(m["cut_at"]),
        stated=None if m["stated"] is None else float(m["stated"]),
        stated_at=None if m["stated_at"] is None else float(m["stated_at"]),
        granted=int(m["granted"]), taken=int(m["taken"]), rejected=int(m["rejected"]),
    )


class Limits:
    """The statements on `rate_limits`, run through the store's connections (on SQLite, its one writer)."""

    def __init__(self, db: Database):
        self._db = db
        pg = db.dialect == "postgresql"
        self._insert = pg_dialect.insert if pg else sqlite_dialect.insert
        self._least = sa.func.least if pg else sa.func.min
        self._greatest = sa.func.greatest if pg else sa.func.max
        self._floor = (lambda x: sa.cast(sa.func.floor(x), sa.Integer)) if pg else (lambda x: sa.cast(x, sa.Integer))
        self._prepare()

    def _p(self, name: str, type_: Any = sa.Float) -> Any:
        # b_*: an UPDATE would take a parameter named like one of its columns as a value to set
        return sa.bindparam(f"b_{name}", type_=type_)

    def _prepare(self) -> None:
        b, p = buckets.c, self._p
        now = p("now")
        this = b.name == p("name", sa.String)
        rate = self._least(b.rate, p("cap"))  # what the bucket refills at
        capacity = self._greatest(1.0, rate * p("burst") / 60.0)
        elapsed = self._greatest(0.0, now - self._greatest(b.updated_at, b.paused_until))
        refill = self._least(capacity, b.tokens + elapsed * rate / 60.0)  # the tokens now (none while paused)
        # `keep`: tokens left in the bucket for others (a take of lower priority grants only what is above it)
        above = self._greatest(0, self._floor(refill - p("keep") + _EPSILON))
        grant = sa.case((now < b.paused_until, 0), else_=self._least(p("want", sa.Integer), above))
        updated_at = self._greatest(b.updated_at, now)  # never backwards (replicas' clocks differ a little)
        returning = [*buckets.c]
        self._take = (
            sa.update(buckets).where(this)
            .values(tokens=refill - grant, updated_at=updated_at, granted=grant, taken=b.taken + grant)
            .returning(*returning)
        )
        self._give_back = (
            sa.update(buckets).where(this)
            .values(tokens=self._least(capacity, refill + p("count", sa.Integer)), updated_at=updated_at,
                    taken=b.taken - p("count", sa.Integer))
            .returning(*returning)
        )
        self._set_rate = (  # the tokens so far counted at the old rate, then the new rate from now on
            sa.update(buckets).where(this)
            .values(rate=p("rate"), probing=p("probing", sa.Boolean), tokens=refill, updated_at=updated_at)
            .returning(*returning)
        )
        grown = self._least(p("target"), b.rate * sa.case((b.probing, p("fast")), else_=p("slow")))
        self._grow = (
            sa.update(buckets)
            .where(this, p("sent_at") >= b.cut_at, b.rate < p("target"))
            .values(rate=grown, tokens=refill, updated_at=updated_at)
            .returning(*returning)
        )
        stated = p("stated")
        stated_rate = stated * p("margin")
        explained = sa.and_(stated.is_not(None), stated_rate < rate)  # we went faster than the stated limit
        first = p("sent_at") > b.cut_at  # sent after the last cut: one cut per overshoot, however many 429s
        self._cut = (
            sa.update(buckets).where(this)
            .values(
                rate=sa.case((explained, stated_rate), (first, self._greatest(p("floor"), rate * p("factor"))),
                             else_=b.rate),
                cut_at=sa.case((sa.or_(explained, first), now), else_=b.cut_at),
                probing=False,
                stated=sa.func.coalesce(stated, b.stated),
                stated_at=sa.case((stated.is_not(None), now), else_=b.stated_at),
                tokens=0.0,
                updated_at=updated_at,
                paused_until=self._greatest(b.paused_until, p("until")),
                rejected=b.rejected + 1,
            )
            .returning(*returning)
        )
        self._pause = (
            sa.update(buckets).where(this).values(paused_until=self._greatest(b.paused_until, p("until")))
            .returning(*returning)
        )
        self._select = sa.select(buckets).where(this)

    async def _one(self, stmt: Any, **values: Any) -> Bucket | None:
        params = {f"b_{k}": v for k, v in values.items()}

        def work(conn: sa.Connection) -> Bucket | None:
            row = conn.execute(stmt, params).first()
            return None if row is None else _bucket(row)

        # Let a statement finish even if its caller is cancelled (a grant cut off halfway would be lost, and
        # on SQLite a statement cut off can leave the write lock held).
        return await asyncio.shield(self._db.txn(work, one_statement=True))

    async def ensure(self, name: str, *, rate: float, tokens: float, now: float, probing: bool) -> Bucket:
        """The bucket, created (with these values) if it does not exist yet."""
        stmt = self._insert(buckets).values(
            name=name, rate=rate, tokens=tokens, updated_at=now, paused_until=0.0, probing=probing, cut_at=0.0,
            stated=None, stated_at=None, granted=0, taken=0, rejected=0,
        ).on_conflict_do_nothing(index_elements=["name"])

        def work(conn: sa.Connection) -> Bucket:
            conn.execute(stmt)
            return _bucket(conn.execute(self._select, {"b_name": name}).one())

        return await asyncio.shield(self._db.txn(work))

    async def bucket(self, name: str) -> Bucket | None:
        def work(conn: sa.Connection) -> Bucket | None:
            row = conn.execute(self._select, {"b_name": name}).first()
            return None if row is None else _bucket(row)

        return await self._db.read(work)

    async def take(self, name: str, *, want: int, now: float, cap: float, burst: float, keep: float = 0.0) -> Bucket:
        """Take up to `want` tokens, as many as the bucket holds now above `keep` (none while it is paused);
        `granted` says how many. The bucket comes back as it is after the take, to tell when the next token is
        due."""
        found = await self._one(self._take, name=name, want=want, now=now, cap=cap, burst=burst, keep=keep)
        if found is None:
            raise LookupError(f"no rate limit bucket {name!r}")
        return found

    async def give_back(self, name: str, *, count: int, now: float, cap: float, burst: float) -> Bucket | None:
        """Return tokens taken but not used (up to the bucket's capacity)."""
        if count <= 0:
            return None
        return await self._one(self._give_back, name=name, count=count, now=now, cap=cap, burst=burst)

    async def set_rate(self, name: str, *, rate: float, probing: bool, now: float, cap: float,
                       burst: float) -> Bucket | None:
        """Pace at `rate` from now on (the tokens until now are counted at the old one)."""
        return await self._one(self._set_rate, name=name, rate=rate, probing=probing, now=now, cap=cap, burst=burst)

    async def grow(self, name: str, *, target: float, fast: float, slow: float, sent_at: float, now: float,
                   cap: float, burst: float) -> Bucket | None:
        """Raise the rate towards `target`: times `fast` while probing, `slow` after a 429. Only for a request
        sent after the last cut (an answer to one sent before it says nothing about the rate since), and only
        below `target`. None if nothing changed."""
        return await self._one(self._grow, name=name, target=target, fast=fast, slow=slow, sent_at=sent_at, now=now,
                               cap=cap, burst=burst)

    async def cut(self, name: str, *, stated: float | None, margin: float, factor: float, floor: float,
                  sent_at: float, until: float, now: float, cap: float, burst: float) -> Bucket:
        """A 429: empty the bucket, pause it until `until`, and lower the rate. If OpenAI `stated` a limit
        that the rate exceeded, the rate becomes `stated * margin`; otherwise it is multiplied by `factor`
        (not below `floor`), once for all the requests sent before the cut."""
        found = await self._one(self._cut, name=name, stated=stated, margin=margin, factor=factor, floor=floor,
                                sent_at=sent_at, until=until, now=now, cap=cap, burst=burst)
        if found is None:
            raise LookupError(f"no rate limit bucket {name!r}")
        return found

    async def pause(self, name: str, *, until: float) -> Bucket | None:
        """Grant nothing before `until` (a limit whose remaining count reached 0)."""
        return await self._one(self._pause, name=name, until=until)

    async def forget_idle(self, *, prefix: str, before: float, now: float) -> int:
        """Delete the buckets named `prefix...` untouched since `before` and not paused at `now` (a bucket idle
        that long is full: made again when next needed, it starts as it would have been). Returns how many."""
        stmt = sa.delete(buckets).where(buckets.c.name.startswith(prefix, autoescape=True),
                                        buckets.c.updated_at < before, buckets.c.paused_until < now)
        return await self._db.txn(lambda conn: conn.execute(stmt).rowcount)

