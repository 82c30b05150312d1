"""Each person's data key, created on first use, kept unwrapped in memory only.

The wrapped key lives in the store; the server key that unwraps it lives outside the data
directory (`crypto.ServerKey`). Erasure deletes the wrapped key and `forget`s the cached
one, after which nothing of the person's can be opened again.
"""

from __future__ import annotations

import threading

from tailorml.registry.people import PeopleStore
from tailorml.service.crypto import DataCipher, ServerKey, new_data_key


class Keyring:
    def __init__(self, store: PeopleStore, server_key: ServerKey) -> None:
        self.store = store
        self.server_key = server_key
        self._ciphers: dict[str, DataCipher] = {}
        self._lock = threading.Lock()

    def cipher(self, person_id: str) -> DataCipher:
        found = self._ciphers.get(person_id)
        if found is not None:
            return found
        stored = self.store.wrapped_key(person_id)
        if stored is None:
            wrapped = self.server_key.wrap(new_data_key(), person_id)
            stored = self.store.set_wrapped_key(person_id, wrapped, self.server_key.key_id)
        cipher = DataCipher(self.server_key.unwrap(stored[0], person_id), person_id)
        with self._lock:
            self._ciphers[person_id] = cipher
        return cipher

    def forget(self, person_id: str) -> None:
        with self._lock:
            self._ciphers.pop(person_id, None)
