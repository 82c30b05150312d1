"""The people store's indexes on both backends (`store_location`): those SQLite's
migrations add exist on PostgreSQL too, API v3's lastModified of a collection stored whole
reads one index entry, and a data directory opened again gets an index it lacks."""

from __future__ import annotations

from tailorml.registry.people import PeopleStore

ADDED = {
    "entries_by_public_id",
    "treatments_by_public_id",
    "entries_by_modified",
    "treatments_by_modified",
    "documents_by_modified",
    "entries_by_identifier",
    "treatments_by_identifier",
    "documents_by_identifier",
    "documents_by_collection_modified",
}


def index_names(store: PeopleStore) -> set[str]:
    if store.database.dialect == "sqlite":
        rows = store.database.query("SELECT name FROM sqlite_master WHERE type = 'index'")
    else:
        rows = store.database.query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
    return {row[0] for row in rows}


def test_the_migrations_indexes_exist_on_both_backends(store_location):
    assert index_names(PeopleStore(store_location)) >= ADDED


def test_a_data_directory_opened_again_gets_back_an_index_it_lacks(tmp_path):
    """SQLite's schema is re-applied at every open (a PostgreSQL database's is its revision:
    tests/test_schema_versions.py)."""
    store = PeopleStore(tmp_path / "data")
    with store.database.transaction() as connection:
        connection.execute("DROP INDEX documents_by_collection_modified")
    assert "documents_by_collection_modified" not in index_names(store)
    assert "documents_by_collection_modified" in index_names(PeopleStore(tmp_path / "data"))


def test_last_modified_of_a_collection_stored_whole_reads_its_index(tmp_path):
    store = PeopleStore(tmp_path / "data")
    plan = store.database.query(
        "EXPLAIN QUERY PLAN SELECT MAX(srv_modified) AS m FROM documents WHERE person_id = ?"
        " AND collection = ?",
        ("p", "profile"),
    )
    assert "documents_by_collection_modified" in " ".join(row["detail"] for row in plan)
