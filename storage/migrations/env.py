"""Alembic environment. Migrations run through `storage.open_store`, which hands over its connection."""

from __future__ import annotations

from alembic import context

from storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Easel runs its migrations itself at start-up (storage.open_store); there is no offline mode.")

if connection.dialect.name == "postgresql":
    # Several replicas may start at once: one migrates, the others wait and then find nothing to do.
    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7240172)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
