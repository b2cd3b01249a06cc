"""Clicks on image buttons, de-duplicated: the same person on the same button within 2 seconds is one click.

Each click claims the half-second slots from its own to 2 s later (`SLOTS` of them), in one transaction.
Two clicks less than 2 s apart always share a slot, so the second meets a claimed key and is a duplicate;
clicks 2.5 s or more apart never share one. The claims of one transaction go in together or not at all
(unique keys), so two clicks arriving at once on different replicas still make one job. Claims older than
an hour are removed by the next click.
"""

from __future__ import annotations

import math

import sqlalchemy as sa

from storage.database import Database, uncancellable
from storage.schema import clicks

SLOT_SECONDS = 0.5
SLOTS = 5  # 0 s .. 2 s after the click, in half seconds
KEEP_SECONDS = 3600.0


class Clicks:
    def __init__(self, db: Database):
        self._db = db

    @staticmethod
    def keys(base: str, at: float) -> list[str]:
        first = math.floor(at / SLOT_SECONDS)
        return [f"{base}:{slot}" for slot in range(first, first + SLOTS)]

    @uncancellable
    async def claim(self, base: str, *, at: float, now: float) -> bool:
        """Claim the click `base` (who, which button, which image) made at `at`; False: a duplicate."""
        keys = self.keys(base, at)

        def work(conn: sa.Connection) -> bool:
            taken = conn.execute(sa.select(sa.func.count()).select_from(clicks)
                                 .where(clicks.c.key.in_(keys))).scalar_one()
            if taken:
                return False
            conn.execute(sa.delete(clicks).where(clicks.c.created_at < now - KEEP_SECONDS))
            conn.execute(sa.insert(clicks), [{"key": key, "created_at": now} for key in keys])
            return True

        try:
            return await self._db.txn(work)
        except sa.exc.IntegrityError:  # the other click of a pair committed first
            return False
