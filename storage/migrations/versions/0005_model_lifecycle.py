"""What OpenAI has said about the models (shutdown dates from GET /v1/models, refused capabilities), shared
by every process and replica.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_lifecycle",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("listed", sa.Boolean, nullable=False),
        sa.Column("shutdown_date", sa.String(10)),
        sa.Column("lacks", sa.JSON, nullable=False),
        sa.Column("listed_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_lifecycle")
