"""The registry: the one database behind "which model does this person use" and, for the
cloud service, "who may see what" — and the only place in tailorml that speaks SQL. It is a
data directory's SQLite file (the embedded default) or a PostgreSQL database (several API
processes and hosts on one database).

- `database`: opening either backend (`postgres` for PostgreSQL, `dialect` translating the
  store's SQL), transactions, the append-only audit log that every module writes to.
- `models`: models, personalization sessions, candidates, gates, reviews, activations.
- `people`: the service's accounts, tokens, assignments, wrapped data keys, encrypted
  readings and treatments, live alert decisions and personalization jobs.
- `schema_versions` and `migrations/`: PostgreSQL's schema as Alembic revisions;
  `partitions`: its monthly partitions of readings and decisions; `retention`: the rule
  that removes old months on both backends.

Why one database: an approval (models) and the alert it changes (people) are judged by the
same audit trail, and one database is one thing to back up, restore and erase from.
"""
