"""The client of encrypted alerts: the person's phone (or uploader) keeps the secret key.

    client = EncryptedAlertClient.from_spec(spec)      # spec: the server's public model spec
    server_keys = client.public_context()               # once: no secret key inside
    answer = evaluate_encrypted(model, server_keys, client.encrypt(window))   # the server
    logits = client.decrypt(answer, n_windows=1)
    decision = client.decide(logits, policy)            # the model's own alert policy

The server sees ciphertexts and the public context only; the readings and the decision
never leave the client in the clear (docs/privacy.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tenseal as ts

from tailorml.errors import TailormlError
from tailorml.policy import AlertPolicy
from tailorml.privacy.context import public_bytes, secret_context
from tailorml.privacy.layout import InputLayout, next_power_of_two
from tailorml.privacy.params import CKKSParameters, PrivacyError
from tailorml.privacy.wire import unpack_parts


class EncryptedAlertClient:
    """Holds the keys; packs and encrypts windows, decrypts logits, decides alerts."""

    def __init__(
        self,
        layout: InputLayout,
        parameters: CKKSParameters,
        n_classes: int,
        max_batch: int,
        policy: AlertPolicy | None = None,
        threads: int | None = None,
    ) -> None:
        self.layout, self.parameters = layout, parameters
        self.n_classes, self.max_batch, self.policy = n_classes, max_batch, policy
        self.context = secret_context(parameters, threads)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], threads: int | None = None) -> EncryptedAlertClient:
        """A client for the model a server describes with `EncryptedModel.public_spec()`."""
        try:
            parameters = spec["parameters"]
            policy = spec.get("policy")
            return cls(
                InputLayout.from_dict(spec["layout"]),
                CKKSParameters(
                    int(parameters["poly_modulus_degree"]),
                    tuple(int(bits) for bits in parameters["coeff_mod_bit_sizes"]),
                    int(parameters["scale_bits"]),
                ),
                int(spec["n_classes"]),
                int(spec["max_batch"]),
                AlertPolicy.from_dict(policy, "model spec") if policy else None,
                threads,
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, TailormlError):  # already names what is wrong
                raise
            raise PrivacyError(
                f"model spec lacks or mistypes {error}; pass EncryptedModel.public_spec()"
            ) from None

    def public_context(self) -> bytes:
        """Parameters and evaluation keys for the server, without the secret key."""
        return public_bytes(self.context)

    def encrypt(self, windows: np.ndarray) -> bytes:
        """One ciphertext of 1 to `max_batch` windows (n, channels, length), readings in their
        own units (mg/dL); a single window may be given as (length,)."""
        windows = self.layout.check_windows(windows)
        if len(windows) > self.max_batch:
            raise PrivacyError(
                f"{len(windows)} windows do not fit one ciphertext (at most {self.max_batch}); "
                "encrypt them in chunks"
            )
        batch = next_power_of_two(len(windows))
        packed = self.layout.pack(windows, batch)
        return ts.ckks_vector(self.context, packed.tolist()).serialize()

    def decrypt(self, answer: bytes, n_windows: int | None = None) -> np.ndarray:
        """Logits (windows, classes) from the server's answer; the first `n_windows` rows
        (the windows encrypted) when given."""
        parts = unpack_parts(answer)
        if len(parts) != self.n_classes:
            raise PrivacyError(
                f"the answer holds {len(parts)} logit vectors, this model has "
                f"{self.n_classes} classes; was it computed for another model?"
            )
        columns = []
        for part in parts:
            try:
                columns.append(ts.ckks_vector_from(self.context, part).decrypt())
            except Exception as error:  # TenSEAL raises ValueError/RuntimeError alike
                raise PrivacyError(
                    f"cannot decrypt the answer ({type(error).__name__}); it was made under "
                    "other keys"
                ) from None
        logits = np.array(columns).T
        return logits if n_windows is None else logits[:n_windows]

    def decide(self, logits: np.ndarray, policy: AlertPolicy | None = None) -> np.ndarray:
        """Class per window under the model's alert policy (the hypo threshold, not argmax)."""
        policy = policy or self.policy
        if policy is None:
            raise PrivacyError("no alert policy: pass the model's policy (public_spec['policy'])")
        return policy.decide(softmax(logits))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, dtype=float) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class ServiceAlerts:
    """Encrypted alerts from a running `tailorml serve --he-model …`: the keys are made and
    kept here; the service receives the public context once and then only ciphertexts.

        alerts = ServiceAlerts("https://host", token)       # keys, public context sent once
        decisions = alerts.decide(windows)                  # (n, channels, 24) mg/dL
    """

    def __init__(self, url: str, token: str, timeout: float = 300.0) -> None:
        import httpx

        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        self.spec = self._checked(self.http.get("/api/v1/encrypted/spec")).json()
        self.client = EncryptedAlertClient.from_spec(self.spec)
        self._checked(
            self.http.put(
                "/api/v1/encrypted/context",
                content=self.client.public_context(),
                headers={"content-type": "application/octet-stream"},
            )
        )

    @staticmethod
    def _checked(answer):
        if answer.status_code >= 400:
            try:
                message = answer.json().get("message", answer.text)
            except ValueError:
                message = answer.text
            raise PrivacyError(f"the service answered {answer.status_code}: {message}")
        return answer

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Decrypted logits, `max_batch` windows per request."""
        windows = self.client.layout.check_windows(windows)
        rows = []
        for start in range(0, len(windows), self.client.max_batch):
            chunk = windows[start : start + self.client.max_batch]
            answer = self._checked(
                self.http.post(
                    "/api/v1/encrypted/alert",
                    content=self.client.encrypt(chunk),
                    headers={"content-type": "application/octet-stream"},
                )
            )
            rows.append(self.client.decrypt(answer.content, len(chunk)))
        return np.concatenate(rows)

    def decide(self, windows: np.ndarray) -> np.ndarray:
        """Class per window under the model's own alert policy, decided here."""
        return self.client.decide(self.logits(windows))
