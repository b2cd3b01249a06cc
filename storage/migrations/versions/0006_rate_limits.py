"""A shared rate limiter: one token bucket per limited resource (OpenAI's images per minute), for every
worker and replica.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("rate", sa.Float, nullable=False),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("paused_until", sa.Float, nullable=False),
        sa.Column("probing", sa.Boolean, nullable=False),
        sa.Column("cut_at", sa.Float, nullable=False),
        sa.Column("stated", sa.Float),
        sa.Column("stated_at", sa.Float),
        sa.Column("granted", sa.Integer, nullable=False),
        sa.Column("taken", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
