"""Retention: a generation outlives its job (its usage stays when the job and its prompt are purged), and the
purge finds old rows by index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.alter_column("job_id", existing_type=sa.Integer, nullable=True)
        batch.create_index("ix_generations_created", ["created_at"])
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])
    op.create_index("ix_threads_updated", "threads", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_threads_updated", "threads")
    op.drop_index("ix_jobs_finished", "jobs")
    with op.batch_alter_table("generations") as batch:
        batch.drop_index("ix_generations_created")
        batch.alter_column("job_id", existing_type=sa.Integer, nullable=False)
