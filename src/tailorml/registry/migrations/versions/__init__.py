"""Alembic revisions, oldest first by number (Alembic itself orders them by
`down_revision`). This file only makes the folder part of the installed package."""
