"""Images are no longer kept in the database: a job that restarts collects its stored response again by id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("job_images")


def downgrade() -> None:
    op.create_table(
        "job_images",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("output_format", sa.String(16)),
        sa.Column("revised_prompt", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
