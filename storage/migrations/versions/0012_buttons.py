"""Buttons on images: what a generation chained on and its size, an index to find an image by its Slack
file, and the clicks table that makes a double click one job.

Revision ID: 0012_buttons
Revises: 0013_budgets (merged after it: main had 0013_budgets on 0011 first)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_buttons"
down_revision = "0013_budgets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("parent_response_id", sa.String(128)))
        batch.add_column(sa.Column("width", sa.Integer))
        batch.add_column(sa.Column("height", sa.Integer))
    op.create_index("ix_generations_file", "generations", ["slack_file_id"])
    op.create_table(
        "clicks",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_clicks_created", "clicks", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_clicks_created", table_name="clicks")
    op.drop_table("clicks")
    op.drop_index("ix_generations_file", table_name="generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("height")
        batch.drop_column("width")
        batch.drop_column("parent_response_id")
