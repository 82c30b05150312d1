"""Alembic's entry point for the registry's revisions: run them on the connection that
`registry.schema_versions.upgrade` opened, inside its transaction (which holds the schema
lock), so that every pending revision is applied together or not at all."""

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=None,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
