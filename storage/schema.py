"""The tables, one schema for SQLite and PostgreSQL (SQLAlchemy Core). Migrations create and change them.

Times are Unix seconds (float) so both dialects compare them the same way.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

from storage.models import JobKind, JobStatus

metadata = sa.MetaData()


def _one_of(column: str, values: type[enum.StrEnum]) -> sa.CheckConstraint:
    """`column` holds a member of `values` (a migration adds a state or kind to the check with the enum)."""
    listed = ", ".join(f"'{member.value}'" for member in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=f"ck_jobs_{column}")


threads = sa.Table(
    "threads",
    metadata,
    sa.Column("team_id", sa.String(32), primary_key=True),
    sa.Column("channel_id", sa.String(32), primary_key=True),
    sa.Column("thread_ts", sa.String(32), primary_key=True),
    sa.Column("started_by", sa.String(32), nullable=False),
    sa.Column("last_response_id", sa.String(128)),
    sa.Column("last_image_file_id", sa.String(64)),
    sa.Column("options", sa.JSON, nullable=False),  # image flags that stick to the thread
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_threads_updated", "updated_at"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),  # one Slack message, one job
    sa.Column("kind", sa.String(16), nullable=False),  # a JobKind
    sa.Column("source", sa.String(16), nullable=False),  # mention | reply | dm | command
    sa.Column("team_id", sa.String(32), nullable=False),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("message_ts", sa.String(32)),  # the user's message; none for a slash command
    sa.Column("thread_ts", sa.String(32)),  # none for a slash command until its root message is posted
    sa.Column("thread_key", sa.String(200), nullable=False),  # jobs with one key run one after another
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("response_url", sa.Text),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("files", sa.JSON, nullable=False),
    sa.Column("force_image", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # a JobStatus
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("noticed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("response_id", sa.String(128)),
    sa.Column("progress", sa.JSON, nullable=False),  # written only by the worker running the job
    sa.Column("queue_ts", sa.String(32)),  # the "number N in the queue" message, while the job waits
    sa.Column("queue_pos", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("worker_id", sa.String(64)),
    sa.Column("lease_until", sa.Float),
    sa.Column("lease_no", sa.Integer, nullable=False, server_default="0"),  # each claim takes the next
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_jobs_status_id", "status", "id"),
    sa.Index("ix_jobs_thread_key", "thread_key", "id"),
    sa.Index("ix_jobs_user_status", "team_id", "user_id", "status"),
    sa.Index("ix_jobs_finished", "finished_at"),
    _one_of("status", JobStatus),
    _one_of("kind", JobKind),
)

generations = sa.Table(
    "generations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id")),  # NULL once retention purged the job
    sa.Column("team_id", sa.String(32), nullable=False),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("thread_ts", sa.String(32)),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("request_text", sa.Text, nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("image_model", sa.String(64)),
    sa.Column("response_id", sa.String(128)),
    sa.Column("image_call_id", sa.String(128)),
    sa.Column("revised_prompt", sa.Text),
    sa.Column("slack_file_id", sa.String(64)),
    sa.Column("usage", sa.JSON),
    sa.Column("tool_usage", sa.JSON),
    sa.Column("status", sa.String(16), nullable=False),  # posted | text | failed
    sa.Column("error", sa.Text),
    sa.Column("queued_ms", sa.Integer),
    sa.Column("generation_ms", sa.Integer),
    sa.Column("upload_ms", sa.Integer),
    sa.Column("cost_micros", sa.BigInteger),  # millionths of a dollar, exact; on the response's first row
    sa.Column("cost_unpriced", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("parent_response_id", sa.String(128)),  # the response the turn chained on (a reroll's too)
    sa.Column("width", sa.Integer),  # the posted image's pixels (what a mask must match)
    sa.Column("height", sa.Integer),
    sa.Index("ix_generations_job", "job_id"),
    sa.Index("ix_generations_created", "created_at"),
    sa.Index("ix_generations_file", "slack_file_id"),
)

# Clicks on an image's buttons: each click claims the half-second slots of the 2 s after it, so a second click
# by the same person on the same button within 2 s meets a claimed slot and makes no second job.
clicks = sa.Table(
    "clicks",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_clicks_created", "created_at"),
)

# Installations in many workspaces (Slack's OAuth flow). These three tables are read and written by slack_sdk's
# own SQLAlchemy stores (through the same async engine); their columns are the ones those stores expect,
# declared here so that Alembic creates them like every other table (a test compares the two).
slack_installations = sa.Table(
    "slack_installations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.String(32), nullable=False),
    sa.Column("app_id", sa.String(32), nullable=False),
    sa.Column("enterprise_id", sa.String(32)),
    sa.Column("enterprise_name", sa.String(200)),
    sa.Column("enterprise_url", sa.String(200)),
    sa.Column("team_id", sa.String(32)),
    sa.Column("team_name", sa.String(200)),
    sa.Column("bot_token", sa.String(200)),
    sa.Column("bot_id", sa.String(32)),
    sa.Column("bot_user_id", sa.String(32)),
    sa.Column("bot_scopes", sa.String(1000)),
    sa.Column("bot_refresh_token", sa.String(200)),
    sa.Column("bot_token_expires_at", sa.DateTime),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("user_token", sa.String(200)),
    sa.Column("user_scopes", sa.String(1000)),
    sa.Column("user_refresh_token", sa.String(200)),
    sa.Column("user_token_expires_at", sa.DateTime),
    sa.Column("incoming_webhook_url", sa.String(200)),
    sa.Column("incoming_webhook_channel", sa.String(200)),
    sa.Column("incoming_webhook_channel_id", sa.String(200)),
    sa.Column("incoming_webhook_configuration_url", sa.String(200)),
    sa.Column("is_enterprise_install", sa.Boolean, nullable=False),
    sa.Column("token_type", sa.String(32)),
    sa.Column("installed_at", sa.DateTime, nullable=False),
    sa.Index("slack_installations_idx", "client_id", "enterprise_id", "team_id", "user_id", "installed_at"),
)

slack_bots = sa.Table(
    "slack_bots",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.String(32), nullable=False),
    sa.Column("app_id", sa.String(32), nullable=False),
    sa.Column("enterprise_id", sa.String(32)),
    sa.Column("enterprise_name", sa.String(200)),
    sa.Column("team_id", sa.String(32)),
    sa.Column("team_name", sa.String(200)),
    sa.Column("bot_token", sa.String(200)),
    sa.Column("bot_id", sa.String(32)),
    sa.Column("bot_user_id", sa.String(32)),
    sa.Column("bot_scopes", sa.String(1000)),
    sa.Column("bot_refresh_token", sa.String(200)),
    sa.Column("bot_token_expires_at", sa.DateTime),
    sa.Column("is_enterprise_install", sa.Boolean, nullable=False),
    sa.Column("installed_at", sa.DateTime, nullable=False),
    sa.Index("slack_bots_idx", "client_id", "enterprise_id", "team_id", "installed_at"),
)

slack_oauth_states = sa.Table(
    "slack_oauth_states",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("state", sa.String(200), nullable=False),
    sa.Column("expire_at", sa.DateTime, nullable=False),
)

# Workspaces that uninstalled Easel (or revoked its token): their data is deleted RETENTION_DAYS after this.
workspaces_removed = sa.Table(
    "workspaces_removed",
    metadata,
    sa.Column("team_id", sa.String(32), primary_key=True),
    sa.Column("removed_at", sa.Float, nullable=False),
)

rate_limits = sa.Table(  # one token bucket per limited resource, shared by every worker and replica
    "rate_limits",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("rate", sa.Float, nullable=False),  # per minute, paced at now (learned; the setting caps it)
    sa.Column("tokens", sa.Float, nullable=False),  # in the bucket at `updated_at`
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("paused_until", sa.Float, nullable=False),  # Retry-After: nothing is granted before then
    sa.Column("probing", sa.Boolean, nullable=False),  # no 429 seen yet: the rate may double
    sa.Column("cut_at", sa.Float, nullable=False),  # when a 429 last lowered the rate
    sa.Column("stated", sa.Float),  # the limit OpenAI stated in its last 429 that named one
    sa.Column("stated_at", sa.Float),
    sa.Column("granted", sa.Integer, nullable=False),  # what the last take granted
    sa.Column("taken", sa.BigInteger, nullable=False),  # granted in all (less what was given back)
    sa.Column("rejected", sa.Integer, nullable=False),  # 429s in all
)

# Budgets. One row per limited scope and period ("user:T1:U1" / "2026-12-01", "channel:T1:C1" / "2026-12-01",
# "team:T1" / "2026-12"), counted in millionths of a dollar: what settled requests cost, and what requests on
# their way hold (their worst case) until they settle.
budget_counters = sa.Table(
    "budget_counters",
    metadata,
    sa.Column("scope", sa.String(80), primary_key=True),
    sa.Column("period", sa.String(10), primary_key=True),
    sa.Column("spent_micros", sa.BigInteger, nullable=False),
    sa.Column("reserved_micros", sa.BigInteger, nullable=False),
)

# One reservation per generate job (a job run again finds its own): what it held, against which periods, and,
# once settled, what it cost. state: reserved | settled | released.
budget_reservations = sa.Table(
    "budget_reservations",
    metadata,
    sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("team_id", sa.String(32), nullable=False),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),  # the workspace's local date when it was reserved
    sa.Column("month", sa.String(7), nullable=False),
    sa.Column("reserved_micros", sa.BigInteger, nullable=False),
    sa.Column("cost_micros", sa.BigInteger, nullable=False),  # 0 until settled
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_budget_reservations_team_month", "team_id", "month"),
)

# Per-workspace settings kept by Easel (today: the time zone its days and months are counted in).
workspace_settings = sa.Table(
    "workspace_settings",
    metadata,
    sa.Column("team_id", sa.String(32), primary_key=True),
    sa.Column("time_zone", sa.String(64)),  # an IANA name; NULL: UTC
    sa.Column("updated_by", sa.String(32)),
    sa.Column("updated_at", sa.Float, nullable=False),
)
