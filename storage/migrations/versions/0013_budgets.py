"""Budgets: spend counters per scope and period, one reservation per generate job, and a workspace's time zone.

Revision ID: 0013_budgets
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_budgets"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_counters",
        sa.Column("scope", sa.String(80), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        sa.Column("spent_micros", sa.BigInteger, nullable=False),
        sa.Column("reserved_micros", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger, nullable=False),
        sa.Column("cost_micros", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_budget_reservations_team_month", "budget_reservations", ["team_id", "month"])
    op.create_table(
        "workspace_settings",
        sa.Column("team_id", sa.String(32), primary_key=True),
        sa.Column("time_zone", sa.String(64)),
        sa.Column("updated_by", sa.String(32)),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workspace_settings")
    op.drop_index("ix_budget_reservations_team_month", table_name="budget_reservations")
    op.drop_table("budget_reservations")
    op.drop_table("budget_counters")
