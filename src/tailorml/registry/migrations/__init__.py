"""The PostgreSQL schema's migrations (Alembic revisions in `versions/`, applied by
`registry.schema_versions`). A revision is frozen once released: a later change to the
schema is a new revision, never an edit of an old one."""
