"""What OpenAI has said about the models, shared by every process and replica through the database.

The worker writes it: after each read of `GET /v1/models` (each listed model's shutdown date), and when OpenAI
refuses a capability for a model. Every process reads it (the one answering Slack resolves options with it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from storage.database import uncancellable
from storage.schema import metadata

if TYPE_CHECKING:
    from storage.database import Database

model_lifecycle = sa.Table(
    "model_lifecycle",
    metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("listed", sa.Boolean, nullable=False),  # in GET /v1/models when it was last read
    sa.Column("shutdown_date", sa.String(10)),  # YYYY-MM-DD; NULL: none announced (or not known)
    sa.Column("lacks", sa.JSON, nullable=False),  # capabilities OpenAI refused for it, as a list
    sa.Column("listed_at", sa.Float),  # when the list that last named it was read
    sa.Column("updated_at", sa.Float, nullable=False),
)


@dataclasses.dataclass(frozen=True)
class Learned:
    """`shutdowns`: model -> shutdown date (None: listed without one) for the models OpenAI has told of;
    `lacks`: model -> capabilities refused; `listed_at`: when the model list was last read (None: never)."""

    shutdowns: dict[str, str | None]
    lacks: dict[str, list[str]]
    listed_at: float | None


class LifecycleStore:
    """The `model_lifecycle` table, through the store's connections (see `Store.lifecycle`)."""

    def __init__(self, db: Database):
        self._db = db

    @uncancellable
    async def save_listing(self, listed: Mapping[str, str | None], *, now: float | None = None) -> None:
        """Record a read of the model list: each listed model with its shutdown date; models not listed any
        more keep what was learned of them (a shutdown date stays), marked as not listed."""
        now = time.time() if now is None else now
        insert = self._db.insert(model_lifecycle)
        upsert = insert.on_conflict_do_update(
            index_elements=["model"],
            set_={"listed": True, "shutdown_date": insert.excluded.shutdown_date, "listed_at": now, "updated_at": now},
        )
        rows = [{"model": name, "listed": True, "shutdown_date": date, "lacks": [], "listed_at": now,
                 "updated_at": now} for name, date in listed.items()]

        def work(conn: sa.Connection) -> None:
            conn.execute(sa.update(model_lifecycle).where(model_lifecycle.c.model.not_in(list(listed)) if listed
                                                          else sa.true()).values(listed=False))
            if rows:
                conn.execute(upsert, rows)

        await self._db.txn(work)

    @uncancellable
    async def save_shutdown(self, model: str, date: str, *, now: float | None = None) -> None:
        """Record a shutdown date OpenAI gave in a refusal (the list may not have said it yet)."""
        now = time.time() if now is None else now
        insert = self._db.insert(model_lifecycle).values(model=model, listed=False, shutdown_date=date, lacks=[],
                                                             updated_at=now)
        stmt = insert.on_conflict_do_update(index_elements=["model"], set_={"shutdown_date": date, "updated_at": now})
        await self._db.txn(lambda conn: conn.execute(stmt), one_statement=True)

    @uncancellable
    async def add_lack(self, model: str, capability: str, *, now: float | None = None) -> None:
        """Record that OpenAI refused `capability` for `model` (kept with any recorded before, by any replica)."""
        now = time.time() if now is None else now
        ensure = self._db.insert(model_lifecycle).values(model=model, listed=False, lacks=[], updated_at=now)
        ensure = ensure.on_conflict_do_nothing(index_elements=["model"])
        row = sa.select(model_lifecycle.c.lacks).where(model_lifecycle.c.model == model).with_for_update()

        def work(conn: sa.Connection) -> None:
            conn.execute(ensure)
            lacks = list(conn.execute(row).scalar_one() or [])
            if capability not in lacks:
                conn.execute(sa.update(model_lifecycle).where(model_lifecycle.c.model == model)
                             .values(lacks=[*lacks, capability], updated_at=now))

        await self._db.txn(work)

    @uncancellable
    async def read(self) -> Learned:
        stmt = sa.select(model_lifecycle)

        def work(conn: sa.Connection) -> list[Any]:
            return conn.execute(stmt).all()

        shutdowns: dict[str, str | None] = {}
        lacks: dict[str, list[str]] = {}
        listed_at: float | None = None
        for row in await self._db.read(work):
            m = row._mapping
            if m["listed"] or m["shutdown_date"]:
                shutdowns[m["model"]] = m["shutdown_date"]
            if m["lacks"]:
                lacks[m["model"]] = list(m["lacks"])
            if m["listed_at"] is not None:
                listed_at = max(listed_at or 0.0, float(m["listed_at"]))
        return Learned(shutdowns=shutdowns, lacks=lacks, listed_at=listed_at)
