"""Each generation's cost, exact, in millionths of a dollar, and whether a model had no price.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("cost_micros", sa.BigInteger))
        batch.add_column(sa.Column("cost_unpriced", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("cost_unpriced")
        batch.drop_column("cost_micros")
