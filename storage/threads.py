"""The `threads` table: the Slack threads Easel started, each with its chain of OpenAI responses (the newest
response id and image) and the image options that stick to it."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from storage import models
from storage.database import Database, uncancellable
from storage.schema import threads


class Threads:
    def __init__(self, db: Database):
        self._db = db
        row = {c: sa.bindparam(c, type_=threads.c[c].type) for c in ("team_id", "channel_id", "thread_ts",
                                                                     "started_by", "options")}
        now = sa.bindparam("now", type_=sa.Float)
        stmt = db.insert(threads).values(**row, created_at=now, updated_at=now)
        # Insert the thread's row, or (`replace`) give an existing one new options.
        self.start_stmt = stmt.on_conflict_do_update(
            index_elements=["team_id", "channel_id", "thread_ts"],
            set_={"options": sa.case((sa.bindparam("replace", type_=sa.Boolean), stmt.excluded.options),
                                     else_=threads.c.options)},
        )
        # The chain moves on (parameters t_team, t_channel, t_ts, chain_response_id, chain_image_file_id, now).
        self.chain_stmt = (
            sa.update(threads)
            .where(threads.c.team_id == sa.bindparam("t_team"), threads.c.channel_id == sa.bindparam("t_channel"),
                   threads.c.thread_ts == sa.bindparam("t_ts"))
            .values(last_response_id=sa.bindparam("chain_response_id"),
                    last_image_file_id=sa.func.coalesce(sa.bindparam("chain_image_file_id", type_=sa.String),
                                                        threads.c.last_image_file_id),
                    updated_at=sa.bindparam("now"))
        )
        self._select = sa.select(threads).where(
            threads.c.team_id == sa.bindparam("t_team"), threads.c.channel_id == sa.bindparam("t_channel"),
            threads.c.thread_ts == sa.bindparam("t_ts"))

    @uncancellable
    async def get(self, *, team_id: str, channel_id: str, thread_ts: str) -> models.Thread | None:
        params = {"t_team": team_id, "t_channel": channel_id, "t_ts": thread_ts}
        row = await self._db.read(lambda conn: conn.execute(self._select, params).first())
        if row is None:
            return None
        values = {k: row._mapping[k] for k in models.Thread.__dataclass_fields__}
        return models.Thread(**{**values, "options": dict(values["options"] or {})})

    @staticmethod
    def where(team_id: str, channel_id: str, thread_ts: str) -> tuple[Any, ...]:
        return threads.c.team_id == team_id, threads.c.channel_id == channel_id, threads.c.thread_ts == thread_ts

    def ensure(self, conn: sa.Connection, team: str, channel: str, ts: str, user: str,
               options: dict[str, Any] | None = None) -> None:
        """The thread's row, if it has none yet (in the caller's transaction)."""
        now = time.time()
        stmt = self._db.insert(threads).values(
            team_id=team, channel_id=channel, thread_ts=ts, started_by=user, options=options or {},
            created_at=now, updated_at=now,
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["team_id", "channel_id", "thread_ts"]))

    def warm_up(self, conn: sa.Connection, now: float) -> None:
        conn.execute(self.start_stmt, {"team_id": "", "channel_id": "", "thread_ts": "", "started_by": "",
                                       "options": {}, "now": now, "replace": False})

    def warm_up_reads(self, conn: sa.Connection) -> None:
        conn.execute(self._select, {"t_team": "", "t_channel": "", "t_ts": ""}).all()
