"""Alembic environment: runs on the connection handed over by balsam.store.migrate."""

from __future__ import annotations

from alembic import context

from balsam.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run Balsam migrations through balsam.store.migrate.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
