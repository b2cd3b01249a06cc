"""What App Home shows a person: their recent images (from the generations Easel posted)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from storage.database import Database
from storage.schema import generations as g


@dataclasses.dataclass(frozen=True)
class RecentImage:
    channel_id: str
    thread_ts: str
    prompt: str
    model: str
    cost_micros: int | None
    created_at: float


class Recent:
    def __init__(self, db: Database):
        self._db = db

    async def images(self, *, team_id: str, user_id: str, limit: int = 5) -> list[RecentImage]:
        """The person's newest posted images, newest first (one per request)."""
        stmt = (sa.select(g.c.channel_id, g.c.thread_ts, g.c.request_text, g.c.image_model, g.c.model,
                          g.c.cost_micros, g.c.created_at)
                .where(g.c.team_id == team_id, g.c.user_id == user_id, g.c.status == "posted",
                       g.c.thread_ts.is_not(None), g.c.cost_micros.is_not(None))
                .order_by(g.c.created_at.desc(), g.c.id.desc()).limit(limit))

        def work(conn: sa.Connection) -> list[RecentImage]:
            return [RecentImage(r.channel_id, r.thread_ts, r.request_text, r.image_model or r.model,
                                None if r.cost_micros is None else int(r.cost_micros), float(r.created_at))
                    for r in conn.execute(stmt)]

        return await self._db.read(work)
