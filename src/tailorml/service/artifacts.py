"""A personalization session's stored tables (the held-out readings and predictions that
the model card's trace plot is drawn from), sealed with the person's data key.

`tailorml personalize` keeps them as parquet beside the registry; in the service they are
readings of a real person, so the worker seals each file right after its session is
registered (and deletes the card it wrote, whose plot shows them), and the review page
draws the card in memory from the sealed files. They are opened only by the process that
holds the server key, and erasure makes them unreadable twice over: the files are deleted
with the retired models, and the data key that sealed them is deleted.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from tailorml.io import atomic_write_bytes
from tailorml.registry.models import Registry
from tailorml.service.crypto import DataCipher

ARTIFACT = "artifact"
SEALED_SUFFIX = ".sealed"


def _purpose(path: Path) -> str:
    """The purpose bound into each file's seal: its kind and name, so that a sealed file
    renamed to another table's name does not open."""
    return f"{ARTIFACT}:{path.name}"


def seal_session(registry: Registry, session_id: int, cipher: DataCipher) -> int:
    """Seal every table of the session in place (`x.parquet` → `x.parquet.sealed`); returns
    how many files were sealed. The sealed copy is written before the clear one goes."""
    key = str(registry.session(session_id).summary.get("artifacts") or "")
    if not key.isalnum():  # refused sessions store no tables
        return 0
    folder = registry.root / "artifacts" / key
    sealed = 0
    for path in sorted(folder.glob("*.parquet")):
        target = path.with_name(path.name + SEALED_SUFFIX)
        atomic_write_bytes(target, cipher.seal(path.read_bytes(), _purpose(path)))
        path.unlink()
        sealed += 1
    return sealed


def sealed_reader(cipher: DataCipher):
    """A reader for `soft.card.card_html` that opens the sealed tables of one person."""

    def read(path: Path) -> pd.DataFrame | None:
        sealed = path.with_name(path.name + SEALED_SUFFIX)
        if not sealed.is_file():
            return None
        return pd.read_parquet(io.BytesIO(cipher.open(sealed.read_bytes(), _purpose(path))))

    return read
