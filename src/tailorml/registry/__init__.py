"""The registry: the one SQLite file behind "which model does this person use" and, for the
cloud service, "who may see what" — and the only place in tailorml that speaks SQL.

- `database`: opening the file (WAL, busy timeout, foreign keys), transactions, the
  append-only audit log that every module writes to.
- `models`: models, personalization sessions, candidates, gates, reviews, activations.
- `people`: the service's accounts, tokens, assignments, wrapped data keys, encrypted
  readings and treatments, live alert decisions and personalization jobs.

Why one file: an approval (models) and the alert it changes (people) are judged by the same
audit trail, and one WAL database is one thing to back up, restore and erase from.
"""
