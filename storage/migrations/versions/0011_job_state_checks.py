"""A job's status and kind are one of the states and kinds the code knows (storage.models.JobStatus, JobKind).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# As the enums are at this revision (a later state or kind comes with a migration of its own).
STATUS = "status IN ('new', 'noticing', 'queued', 'running', 'done', 'failed')"
KIND = "kind IN ('forget', 'generate', 'notice', 'reaction')"


def _rebuilding_jobs(change: Callable[[], None]) -> None:
    """On SQLite the jobs table is built anew (it cannot take a constraint otherwise), inside the migration's
    transaction, where foreign keys stay enforced: dropping the old table would fail while generations refer
    to its rows. Those references are set aside meanwhile, and put back once the new table holds the rows."""
    if op.get_bind().dialect.name != "sqlite":
        change()
        return
    op.execute("CREATE TEMPORARY TABLE easel_0011_links AS "
               "SELECT id, job_id FROM generations WHERE job_id IS NOT NULL")
    op.execute("UPDATE generations SET job_id = NULL WHERE job_id IS NOT NULL")
    change()
    op.execute("UPDATE generations SET job_id = "
               "(SELECT l.job_id FROM easel_0011_links l WHERE l.id = generations.id) "
               "WHERE id IN (SELECT id FROM easel_0011_links)")
    op.execute("DROP TABLE easel_0011_links")


def upgrade() -> None:
    def change() -> None:
        with op.batch_alter_table("jobs") as batch:
            batch.create_check_constraint("ck_jobs_status", STATUS)
            batch.create_check_constraint("ck_jobs_kind", KIND)

    _rebuilding_jobs(change)


def downgrade() -> None:
    def change() -> None:
        with op.batch_alter_table("jobs") as batch:
            batch.drop_constraint("ck_jobs_kind", type_="check")
            batch.drop_constraint("ck_jobs_status", type_="check")

    _rebuilding_jobs(change)
