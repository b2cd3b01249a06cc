"""The `generations` table: one row per outcome of a generate job (an image posted, a text answer, a
failure), with what the model was asked and revised, its usage and its cost."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from storage import models
from storage.database import Database, uncancellable
from storage.schema import generations as generations_table


class Generations:
    def __init__(self, db: Database):
        self._db = db
        self.insert_stmt = sa.insert(generations_table)

    @staticmethod
    def rows(generations: Sequence[models.Generation], now: float) -> list[dict[str, Any]]:
        """The rows of `generations`, as they are inserted."""
        return [{**{f: getattr(g, f) for f in models.Generation.__dataclass_fields__}, "created_at": now}
                for g in generations]

    def insert_from_params(self, count: int, *, when: Any) -> Any:
        """An INSERT ... SELECT of `count` rows given as parameters g<i>_<column>, made only if `when` holds
        (for one PostgreSQL statement that also ends the job). One SELECT of parameters per row: a multi-row
        VALUES has no cache key, and would be compiled again on every call."""
        columns = [c.name for c in generations_table.c if c.name != "id"]
        rows = [sa.select(*(sa.bindparam(f"g{i}_{c}", type_=generations_table.c[c].type) for c in columns))
                .where(when) for i in range(count)]
        return sa.insert(generations_table).from_select(columns, sa.union_all(*rows) if count > 1 else rows[0])

    @uncancellable
    async def posted(self, *, team_id: str, channel_id: str, slack_file_id: str) -> models.Generation | None:
        """The image Easel posted as `slack_file_id` in this workspace and channel, or None."""
        g = generations_table.c
        stmt = sa.select(generations_table).where(
            g.slack_file_id == slack_file_id, g.team_id == team_id, g.channel_id == channel_id,
            g.status == "posted").order_by(g.id.desc()).limit(1)
        row = await self._db.read(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        m = row._mapping
        return models.Generation(**{f: m[f] for f in models.Generation.__dataclass_fields__})

    @uncancellable
    async def recent_durations(self, image_model: str, *, limit: int) -> list[tuple[dict[str, Any], int]]:
        """The newest `limit` images posted with `image_model`: (the tool as sent, generation_ms), newest
        first (one per response: the images of one answer share its time)."""
        g = generations_table.c
        stmt = (sa.select(g.options, g.generation_ms).where(
            g.image_model == image_model, g.status == "posted", g.generation_ms.is_not(None),
            g.cost_micros.is_not(None)).order_by(g.id.desc()).limit(limit))
        rows = await self._db.read(lambda conn: conn.execute(stmt).all())
        return [(dict(options or {}), int(ms)) for options, ms in rows]

    @uncancellable
    async def all(self, *, job_id: int | None = None) -> Sequence[dict[str, Any]]:
        stmt = sa.select(generations_table).order_by(generations_table.c.id)
        if job_id is not None:
            stmt = stmt.where(generations_table.c.job_id == job_id)
        return [dict(r._mapping) for r in await self._db.read(lambda conn: conn.execute(stmt).all())]
