"""The order in which waiting generations are served, and the count against the deployment's cap: what the
run-claim (`storage.leases`) and the queue places (`storage.queue`) share, so that a place told is the order
jobs really start in.

Fair order: round-robin between workspaces, and within a workspace between its people. Each waiting job is
ranked within its person's waiting jobs (by id), then within its workspace by (that rank, id); jobs are served
by (rank within the workspace, id). Jobs running, and those that ended while others waited, are ranked too (a
person whose job ran has had a turn), so one person's five requests take turns with everyone else's single ones
instead of all going first; a thread's jobs keep their order (each waits for the one before it anyway).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from storage.database import one_of
from storage.job_table import ACTIVE, GENERATE, WAITING, S
from storage.schema import jobs

# Claims that may start generations take this (transaction-scoped) lock on PostgreSQL, one after another: the
# count of running generations each one reads is then never stale. The key is Easel's own ("EASEL" + 1).
CLAIM_LOCK = sa.text("SELECT pg_advisory_xact_lock(4541534501)")


def running_live(now: Any) -> Any:
    """The generate jobs running now under a live lease, in the whole deployment (a scalar subquery). One whose
    owner's lease ran out is waiting to be taken again: it holds no place under the cap."""
    return (sa.select(sa.func.count()).select_from(jobs)
            .where(jobs.c.kind == GENERATE, jobs.c.status == S.RUNNING.value, jobs.c.lease_until >= now)
            .scalar_subquery())


def waiting(now: Any, table: Any = jobs) -> Any:
    """Generate jobs that wait for a generation (new, being noticed, queued, or running under a dead lease)."""
    c = table.c
    return sa.and_(c.kind == GENERATE, sa.or_(
        one_of(c.status, WAITING), sa.and_(c.status == S.RUNNING.value, c.lease_until < now)))


def fair_rank(name: str = "fair") -> Any:
    """The generate jobs of the queue's current busy stretch with their `team_rank` (a subquery of id, kind,
    status, lease_until, team_rank): waiting ones are served by (team_rank, id).

    The stretch: every unfinished generate job (a person whose job runs has had a turn), and those finished
    since the oldest waiting one came in (so has a person whose job ended meanwhile: without them, a heavy user's
    next job would rank first again the moment the one before it ended). When the queue empties, the turns
    start afresh. Two selects, each on its own index (status; finished_at), instead of one with an OR."""
    oldest = (sa.select(sa.func.min(jobs.c.created_at)).where(waiting(sa.bindparam("now", type_=sa.Float)))
              .scalar_subquery())
    columns = (jobs.c.id, jobs.c.team_id, jobs.c.user_id, jobs.c.kind, jobs.c.status, jobs.c.lease_until)
    stretch = sa.union_all(
        sa.select(*columns).where(jobs.c.kind == GENERATE, one_of(jobs.c.status, ACTIVE)),
        sa.select(*columns).where(jobs.c.finished_at >= oldest, jobs.c.kind == GENERATE),
    ).subquery(f"{name}_stretch")
    by_user = (sa.select(stretch.c.id, stretch.c.team_id, stretch.c.kind, stretch.c.status, stretch.c.lease_until,
                         sa.func.row_number().over(partition_by=(stretch.c.team_id, stretch.c.user_id),
                                                   order_by=stretch.c.id).label("user_rank"))
               .subquery(f"{name}_by_user"))
    return sa.select(by_user.c.id, by_user.c.kind, by_user.c.status, by_user.c.lease_until,
                     sa.func.row_number().over(partition_by=by_user.c.team_id,
                                               order_by=(by_user.c.user_rank, by_user.c.id)).label("team_rank"),
                     ).subquery(name)
