"""What every table group that reads or writes jobs shares: the job states as groups, the lease fence each
write about a job is checked on, and a row read back as a `Job`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from storage import models
from storage.database import one_of
from storage.schema import jobs

S = models.JobStatus
WAITING = (S.NEW.value, S.NOTICING.value, S.QUEUED.value)
HELD = (S.NOTICING.value, S.RUNNING.value)  # the states in which a job has a lease
ACTIVE = (*WAITING, S.RUNNING.value)
GENERATE = models.JobKind.GENERATE.value
NEW_JOB_COLUMNS = ("dedupe_key", "kind", "source", "team_id", "channel_id", "user_id", "message_ts", "thread_ts",
                   "thread_key", "text", "response_url", "options", "files", "force_image", "created_at")

QUEUE_SHOWN = (  # waiting generate jobs that show a queue message (looked up now and then, mostly to find none)
    sa.select(jobs.c.id, jobs.c.channel_id, jobs.c.queue_ts, jobs.c.queue_pos, jobs.c.team_id)
    .where(jobs.c.kind == GENERATE, one_of(jobs.c.status, WAITING), jobs.c.queue_ts.is_not(None))
    .order_by(jobs.c.id)
)
_earlier = jobs.alias("earlier")
# An earlier generate job of the same thread is not finished, so this one must wait for it. Built once: an
# alias's column collections are costly to set up, and the claim queries use this on every call.
EARLIER_UNFINISHED = (
    sa.select(_earlier.c.id)
    .where(
        _earlier.c.thread_key == jobs.c.thread_key,
        _earlier.c.id < jobs.c.id,
        one_of(_earlier.c.status, ACTIVE),
        _earlier.c.kind == GENERATE,
    )
    .exists()
)

_queued = jobs.alias("queued")
# A generate job waits for a generation slot (or the pacer): a new request does not start ahead of it.
ANY_QUEUED = (
    sa.select(_queued.c.id)
    .where(_queued.c.kind == GENERATE, _queued.c.status == S.QUEUED.value)
    .exists()
)


def fence() -> tuple[Any, ...]:
    """The job named `job_id` is held (noticing or running) under the lease named `held_lease`."""
    return (jobs.c.id == sa.bindparam("job_id"), jobs.c.lease_no == sa.bindparam("held_lease", type_=sa.Integer),
            one_of(jobs.c.status, HELD))


def landed(*where: Any) -> Any:
    """(id, lease_no) of the jobs named by `ids` that meet `where`: which fenced writes of a batch took effect."""
    return sa.select(jobs.c.id, jobs.c.lease_no).where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)), *where)


def to_job(row: Any) -> models.Job:
    m = row._mapping
    return models.Job(
        id=m["id"],
        dedupe_key=m["dedupe_key"],
        kind=models.JobKind(m["kind"]),
        source=m["source"],
        team_id=m["team_id"],
        channel_id=m["channel_id"],
        user_id=m["user_id"],
        message_ts=m["message_ts"],
        thread_ts=m["thread_ts"],
        thread_key=m["thread_key"],
        text=m["text"],
        options=models.JobOptions.from_json(m["options"]),
        files=list(m["files"] or []),
        force_image=bool(m["force_image"]),
        response_url=m["response_url"],
        status=models.JobStatus(m["status"]),
        attempts=m["attempts"],
        noticed=bool(m["noticed"]),
        response_id=m["response_id"],
        progress=models.JobProgress.from_json(m["progress"]),
        queue_ts=m["queue_ts"],
        queue_pos=m["queue_pos"],
        error=m["error"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        lease_no=m["lease_no"],
    )
