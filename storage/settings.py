"""Settings per channel (and the workspace's, as defaults for its channels), and the audit log of every change.

A channel's row is `(team_id, channel_id)`; the workspace's is `(team_id, "")`. A field left unset (None)
takes the workspace's value, and an unset workspace value takes the environment's. A change is one
transaction: the row is made if it is new, read (locked on PostgreSQL), written, and each field that changed
gets an audit entry (who, when, before, after), so that two admins saving at once are both recorded, in order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from storage.database import Database
from storage.models import ChannelSettings
from storage.schema import channel_settings as rows
from storage.schema import settings_audit as audit

WORKSPACE = ""  # the channel_id of a workspace's own settings


FIELDS = tuple(f.name for f in dataclasses.fields(ChannelSettings))


@dataclasses.dataclass(frozen=True)
class Place:
    """A channel's settings and its workspace's, as stored."""

    workspace: ChannelSettings = ChannelSettings()
    channel: ChannelSettings = ChannelSettings()

    @property
    def effective(self) -> ChannelSettings:
        return self.channel.over(self.workspace)


@dataclasses.dataclass(frozen=True)
class Change:
    """One audit entry: a field of a place's settings changed by `user_id` at `at`."""

    team_id: str
    channel_id: str
    user_id: str
    at: float
    field: str
    before: Any
    after: Any


def _value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


class Settings:
    def __init__(self, db: Database):
        self._db = db

    async def place(self, team_id: str, channel_id: str) -> Place:
        """The channel's and the workspace's settings, in one read."""
        stmt = sa.select(rows.c.channel_id, rows.c.settings).where(
            rows.c.team_id == team_id, rows.c.channel_id.in_([WORKSPACE, channel_id]))

        def work(conn: sa.Connection) -> Place:
            found = {c: ChannelSettings.from_json(s) for c, s in conn.execute(stmt)}
            return Place(workspace=found.get(WORKSPACE, ChannelSettings()),
                         channel=found.get(channel_id, ChannelSettings()) if channel_id != WORKSPACE
                         else ChannelSettings())

        return await self._db.read(work)

    async def get(self, team_id: str, channel_id: str) -> ChannelSettings:
        """One place's own settings (the workspace's with channel_id WORKSPACE)."""
        stmt = sa.select(rows.c.settings).where(rows.c.team_id == team_id, rows.c.channel_id == channel_id)
        return ChannelSettings.from_json(await self._db.read(lambda conn: conn.execute(stmt).scalar()))

    async def change(self, team_id: str, channel_id: str, new: ChannelSettings, *, by: str,
                     now: float) -> list[Change]:
        """Store `new` as the place's settings; the changes, each also in the audit log (none: nothing changed)."""
        select = (sa.select(rows.c.settings).where(rows.c.team_id == team_id, rows.c.channel_id == channel_id)
                  .with_for_update())
        values = {"team_id": team_id, "channel_id": channel_id, "settings": new.to_json(), "updated_by": by,
                  "updated_at": now}
        upsert = self._db.insert(rows).values(**values).on_conflict_do_update(
            index_elements=["team_id", "channel_id"],
            set_={k: v for k, v in values.items() if k not in ("team_id", "channel_id")})

        # a place's first change: its row is made first (empty: the same as none), so that the one below locks it
        ensure = self._db.insert(rows).values(**{**values, "settings": {}}).on_conflict_do_nothing(
            index_elements=["team_id", "channel_id"])

        def work(conn: sa.Connection) -> list[Change]:
            conn.execute(ensure)
            old = ChannelSettings.from_json(conn.execute(select).scalar())
            changes = [Change(team_id, channel_id, by, now, f, _value(getattr(old, f)), _value(getattr(new, f)))
                       for f in FIELDS if getattr(old, f) != getattr(new, f)]
            if not changes:
                return []
            conn.execute(upsert)
            conn.execute(sa.insert(audit), [
                {"team_id": team_id, "channel_id": channel_id, "user_id": by, "at": now, "field": c.field,
                 "before": c.before, "after": c.after} for c in changes])
            return changes

        return await self._db.txn(work)

    async def record(self, team_id: str, channel_id: str, *, field: str, before: Any, after: Any, by: str,
                     now: float) -> None:
        """An audit entry for a setting kept elsewhere (the workspace's time zone)."""
        row = {"team_id": team_id, "channel_id": channel_id, "user_id": by, "at": now, "field": field,
               "before": before, "after": after}
        await self._db.txn(lambda conn: conn.execute(sa.insert(audit).values(**row)))

    async def log(self, team_id: str, *, channel_id: str | None = None, limit: int = 20) -> list[Change]:
        """The newest changes first: a workspace's (all its places), or one place's."""
        a = audit.c
        where = [a.team_id == team_id] + ([a.channel_id == channel_id] if channel_id is not None else [])
        stmt = sa.select(audit).where(*where).order_by(a.at.desc(), a.id.desc()).limit(limit)

        def work(conn: sa.Connection) -> list[Change]:
            return [Change(r.team_id, r.channel_id, r.user_id, float(r.at), r.field, r.before, r.after)
                    for r in conn.execute(stmt)]

        return await self._db.read(work)
