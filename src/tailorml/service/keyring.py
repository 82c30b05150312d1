"""Each person's data key, created on first use, kept unwrapped in memory only; and the
service's own secrets (the VAPID key of Web Push), kept the same way.

The wrapped key lives in the store; the server key that unwraps it lives outside the data
directory (`crypto.ServerKey`). Erasure deletes the wrapped key and `forget`s the cached
one, after which nothing of the person's can be opened again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

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

    def service_secret(self, name: str, generate: Callable[[], tuple[bytes, str]]):
        """(secret, public part) of one of the service's own keys: generated once by
        `generate` (the first process to store it wins, so every process of a data
        directory uses one), kept wrapped by the server key."""
        stored = self.store.service_key(name)
        if stored is None:
            secret, public = generate()
            wrapped = self.server_key.wrap(secret, f"service:{name}")
            stored = self.store.add_service_key(name, wrapped, self.server_key.key_id, public)
        wrapped, _, public = stored
        return self.server_key.unwrap(wrapped, f"service:{name}"), public
