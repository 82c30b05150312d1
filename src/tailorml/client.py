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
from tailorml.privacy.wire import CONTEXT_HEADER, MODEL_HEADER, fingerprint, unpack_parts


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

    Every request names this device's context and the model whose policy it will apply.
    When the service no longer has the context (another device of the person's replaced
    it) or serves another model, it answers 409 and this client re-registers, or re-reads
    the model's spec (new keys if the chain changed), then asks again: never an alert from
    keys or a threshold that do not belong to the answer.
    """

    def __init__(self, url: str, token: str, timeout: float = 300.0) -> None:
        import httpx

        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        self.spec = self._read_spec()
        self.client = EncryptedAlertClient.from_spec(self.spec)
        self.context_sha256 = self._register()

    def _read_spec(self) -> dict[str, Any]:
        spec = self._checked(self.http.get("/api/v1/encrypted/spec")).json()
        if not isinstance(spec, dict) or not isinstance(spec.get("model_sha256"), str):
            raise PrivacyError("the service's /api/v1/encrypted/spec has no model_sha256")
        return spec

    def _register(self) -> str:
        public = self.client.public_context()
        answer = self._checked(
            self.http.put(
                "/api/v1/encrypted/context",
                content=public,
                headers={"content-type": "application/octet-stream"},
            )
        ).json()
        sent = fingerprint(public)
        if answer.get("context_sha256") != sent:
            raise PrivacyError(
                "the service registered another public context than this device sent; "
                "check the URL (a proxy that alters bodies?)"
            )
        return sent

    def _renew(self, reason: str | None) -> None:
        """Recover from a 409: re-register this device's context, or follow a new model."""
        if reason == "model_changed":
            spec = self._read_spec()
            same_keys = all(
                spec.get(key) == self.spec.get(key)
                for key in ("layout", "parameters", "n_classes", "max_batch")
            )
            self.spec = spec
            if same_keys:
                policy = spec.get("policy")
                self.client.policy = AlertPolicy.from_dict(policy, "model spec") if policy else None
                return
            self.client = EncryptedAlertClient.from_spec(spec)
        self.context_sha256 = self._register()

    @staticmethod
    def _checked(answer):
        if answer.status_code >= 400:
            try:
                message = answer.json().get("message", answer.text)
            except ValueError:
                message = answer.text
            raise PrivacyError(f"the service answered {answer.status_code}: {message}")
        return answer

    def _ask(self, chunk: np.ndarray) -> np.ndarray:
        """Decrypted logits of one ciphertext's windows; one renewal after a 409."""
        for attempt in range(2):
            answer = self.http.post(
                "/api/v1/encrypted/alert",
                content=self.client.encrypt(chunk),
                headers={
                    "content-type": "application/octet-stream",
                    CONTEXT_HEADER: self.context_sha256,
                    MODEL_HEADER: self.spec["model_sha256"],
                },
            )
            if answer.status_code == 409 and attempt == 0:
                try:
                    reason = answer.json().get("reason")
                except ValueError:
                    reason = None
                if reason in ("context_unknown", "model_changed"):
                    self._renew(reason)
                    continue
            self._checked(answer)
            served = answer.headers.get(MODEL_HEADER)
            if served != self.spec["model_sha256"]:
                raise PrivacyError(
                    f"the service answered with model {str(served)[:12]}…, not the "
                    f"{self.spec['model_sha256'][:12]}… whose policy this client applies; retry"
                )
            return self.client.decrypt(answer.content, len(chunk))
        raise AssertionError("unreachable")

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Decrypted logits, `max_batch` windows per request, all from one model (asked
        again from the start if the service's model changed midway)."""
        windows = self.client.layout.check_windows(windows)
        for _ in range(2):
            model = self.spec["model_sha256"]
            rows = []
            for start in range(0, len(windows), self.client.max_batch):
                rows.append(self._ask(windows[start : start + self.client.max_batch]))
            if self.spec["model_sha256"] == model:
                return np.concatenate(rows)
        raise PrivacyError("the service's model changed twice during one request; retry")

    def decide(self, windows: np.ndarray) -> np.ndarray:
        """Class per window under the model's own alert policy, decided here."""
        return self.client.decide(self.logits(windows))
