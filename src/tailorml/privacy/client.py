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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts

from tailorml.errors import TailormlError
from tailorml.io import atomic_write_private
from tailorml.policy import AlertPolicy
from tailorml.privacy.context import OtherChainError, load_secret, public_bytes, secret_context
from tailorml.privacy.layout import InputLayout, next_power_of_two
from tailorml.privacy.params import CKKSParameters, PrivacyError
from tailorml.privacy.wire import (
    CONTEXT_HEADER,
    MODEL_HEADER,
    fingerprint,
    is_fingerprint,
    unpack_parts,
)


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
        secret: bytes | None = None,
    ) -> None:
        self.layout, self.parameters = layout, parameters
        self.n_classes, self.max_batch, self.policy = n_classes, max_batch, policy
        if secret is None:
            self.context = secret_context(parameters, threads)
        else:
            self.context = load_secret(secret, parameters, threads)

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], threads: int | None = None, secret: bytes | None = None
    ) -> EncryptedAlertClient:
        """A client for the model a server describes with `EncryptedModel.public_spec()`:
        fresh keys, or the ones of `secret` (`secret_bytes()` of an earlier client)."""
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
                secret,
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, TailormlError):  # already names what is wrong
                raise
            raise PrivacyError(
                f"model spec lacks or mistypes {error}; pass EncryptedModel.public_spec()"
            ) from None

    def public_context(self) -> bytes:
        """Parameters and evaluation keys for the server, without the secret key."""
        if not (self.context.has_galois_keys() and self.context.has_relin_keys()):
            self.context.generate_galois_keys()  # keys read back from `secret_bytes`
            self.context.generate_relin_keys()
        return public_bytes(self.context)

    def secret_bytes(self) -> bytes:
        """The secret and public keys (under 1 MB), for the device to keep: any evaluation
        keys made from the same secret key serve, so the server's copy stays valid."""
        return self.context.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )

    def encrypt(self, windows: np.ndarray) -> bytes:
        """One ciphertext of 1 to `max_batch` windows (n, channels, length), readings in their
        own units (mg/dL); a single window may be given as (length,)."""
        windows = check_readings(self.layout.check_windows(windows), self.policy)
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
        logits = logits if n_windows is None else logits[:n_windows]
        if not np.isfinite(logits).all() or np.abs(logits).max() > MAX_ABS_LOGIT:
            # what decrypting under keys that do not match the evaluation keys looks like
            raise PrivacyError(
                f"decrypted logits are noise (|logit| up to {np.abs(logits).max():.3g}): the "
                "answer was computed under keys that do not match this client's; register "
                "its public context again (or make new keys)"
            )
        return logits

    def decide(self, logits: np.ndarray, policy: AlertPolicy | None = None) -> np.ndarray:
        """Class per window under the model's alert policy (the hypo threshold, not argmax)."""
        policy = policy or self.policy
        if policy is None:
            raise PrivacyError("no alert policy: pass the model's policy (public_spec['policy'])")
        return policy.decide_logits(logits)


# CKKS decrypts a value correctly only within the chain's headroom (2^15 above the scale
# for the three-level chain): a reading far outside any sensor's range would decrypt to
# noise, and a window in mmol/L would be read as a deep hypo. Refused instead.
CGM_RANGE_MGDL = (20.0, 1000.0)
MAX_ABS_READING = 1000.0
# a trained alert model's logits stay in the tens; CKKS noise from mismatched keys is ~1e5+
MAX_ABS_LOGIT = 1e4


def check_readings(windows: np.ndarray, policy: AlertPolicy | None) -> np.ndarray:
    """`windows` if every reading is in a range the model and CKKS can take, else a one-line
    error naming the window, channel and value."""
    channels = list(policy.channels) if policy is not None else []
    if "cgm" in channels:
        cgm = windows[:, channels.index("cgm"), :]
        low, high = CGM_RANGE_MGDL
        bad = np.argwhere((cgm < low) | (cgm > high))
        if len(bad):
            window, reading = bad[0]
            value = cgm[window, reading]
            in_mmol = value < low and cgm[window].max() < 35
            hint = "; is it in mmol/L? multiply by 18.016" if in_mmol else ""
            raise PrivacyError(
                f"window {window}: CGM reading {reading} is {value:.10g}, outside "
                f"{low:g}–{high:g} mg/dL{hint}"
            )
    bad = np.argwhere(np.abs(windows) > MAX_ABS_READING)
    if len(bad):
        window, channel, reading = bad[0]
        name = channels[channel] if channel < len(channels) else f"channel {channel}"
        raise PrivacyError(
            f"window {window}: {name} reading {reading} is {windows[window, channel, reading]:g}, "
            f"beyond ±{MAX_ABS_READING:g}; encrypted logits would be noise"
        )
    return windows


KEYS_MAGIC = b"TMLKEYS1"


BUSY = (429, 503)  # the service asks to come back later (Retry-After, in seconds)


def retry_when_busy(send, budget: float, sleep=time.sleep):
    """`send()`'s answer, sent again while the service answers 429/503, after the
    `Retry-After` it asks for, until `budget` seconds of waiting are spent: a device that
    registers while another of the same person does, or while the service is full, gets
    through instead of failing. The last answer is returned either way."""
    answer, waited = send(), 0.0
    while answer.status_code in BUSY and waited < budget:
        try:
            pause = float(answer.headers.get("retry-after", "5"))
        except ValueError:
            pause = 5.0
        pause = min(max(pause, 0.0), budget - waited)
        sleep(pause)
        waited += pause
        answer = send()
    return answer


class _ModelChanged(Exception):
    """The service swapped its model during a request: start the windows over."""


class ServiceAlerts:
    """Encrypted alerts from a running `tailorml serve --he-model …`: the keys are made and
    kept here; the service receives the public context once and then only ciphertexts.

        alerts = ServiceAlerts("https://host", token, keys="~/.tailorml/keys")
        decisions = alerts.decide(windows)                  # (n, channels, 24) mg/dL

    `keys` (optional) is where the device keeps its secret key (mode 0600, under 1 MB) and
    which context it registered: a restarted app reuses them, its device slot on the
    service and its upload of 50-250 MB, instead of registering as a new device.

    Every request names this device's context and the model whose policy it will apply.
    When the service no longer has the context (another device of the person's replaced
    it) or serves another model, it answers 409 and this client re-registers, or re-reads
    the model's spec (new keys if the chain changed), then asks again: never an alert from
    keys or a threshold that do not belong to the answer. A registration the service
    answers 429/503 (another device of the person uploading, or the service full) is sent
    again after the `Retry-After` it asks for, for up to `busy_wait` seconds.
    """

    def __init__(
        self,
        url: str,
        token: str,
        timeout: float = 300.0,
        keys: str | Path | None = None,
        busy_wait: float = 180.0,
    ) -> None:
        import httpx

        self.busy_wait = busy_wait  # seconds a registration may wait on a busy service

        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        self.keys = Path(keys).expanduser() if keys is not None else None
        self._person: str | None = None
        self.spec = self._read_spec()
        kept = self._kept_keys()
        if kept is not None:  # registered before: a 409 will say if the service lost it
            self.client, self.context_sha256 = kept
        else:
            self.client = EncryptedAlertClient.from_spec(self.spec)
            self.context_sha256 = self._register()

    def _kept_keys(self) -> tuple[EncryptedAlertClient, str] | None:
        """The keys this device kept in `keys` for the served model's chain, with the
        fingerprint of the context it registered; None if there are none (or they were
        made for another chain: they cannot serve this model and are replaced)."""
        if self.keys is None or not self.keys.exists():
            return None
        try:
            data = self.keys.read_bytes()
        except OSError as error:
            raise PrivacyError(
                f"keys file {self.keys}: cannot read it ({error.strerror})"
            ) from None
        parts = data.split(b"\n", 4)
        if (
            len(parts) != 5
            or parts[0] != KEYS_MAGIC
            or not all(is_fingerprint(p) for p in parts[1:3])
        ):
            raise PrivacyError(
                f"keys file {self.keys} is not a tailorml keys file; pass another path, or "
                "delete it to make new keys (the service then sees a new device)"
            )
        _, name, checksum, owner, secret = parts
        if fingerprint(secret).encode("ascii") != checksum:
            raise PrivacyError(
                f"keys file {self.keys} is damaged (its checksum does not match); delete it "
                "to make new keys (the service then sees a new device)"
            )
        if owner != self._owner().encode():
            raise PrivacyError(
                f"keys file {self.keys} belongs to {owner.decode(errors='replace')[:120]}, not "
                f"{self._owner()}; keep one keys file per account and service"
            )
        if self.keys.stat().st_mode & 0o077:
            self.keys.chmod(0o600)  # a secret: readable by its owner only
        try:
            client = EncryptedAlertClient.from_spec(self.spec, secret=secret)
        except OtherChainError:  # the served model moved to another chain since
            return None
        except PrivacyError as error:
            raise PrivacyError(f"keys file {self.keys}: {error}") from None
        return client, name.decode("ascii")

    def _keep_keys(self, registered: str) -> None:
        if self.keys is None:
            return
        secret = self.client.secret_bytes()
        checksum = fingerprint(secret).encode("ascii")
        owner = self._owner().encode()
        data = b"\n".join([KEYS_MAGIC, registered.encode("ascii"), checksum, owner, secret])
        try:
            atomic_write_private(self.keys, data)
        except (OSError, TailormlError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise PrivacyError(f"keys file {self.keys}: cannot write it ({reason})") from None

    def _owner(self) -> str:
        """Whose keys these are: the service's URL and the account's id (a keys file shared
        by two accounts or services would re-register, and take a device slot, every start)."""
        if self._person is None:
            me = self._checked(self.http.get("/api/v1/people/me")).json()
            self._person = str(me.get("id", ""))
        return f"{str(self.http.base_url).rstrip('/')} {self._person}"

    def _read_spec(self) -> dict[str, Any]:
        spec = self._checked(self.http.get("/api/v1/encrypted/spec")).json()
        if not isinstance(spec, dict) or not isinstance(spec.get("model_sha256"), str):
            raise PrivacyError("the service's /api/v1/encrypted/spec has no model_sha256")
        return spec

    def _register(self) -> str:
        public = self.client.public_context()
        sent = fingerprint(public)
        # kept first: an unwritable keys file fails before 50-250 MB go up and take a slot;
        # kept but not registered is harmless (the first request's 409 registers it)
        self._keep_keys(sent)
        answer = self._checked(
            retry_when_busy(
                lambda: self.http.put(
                    "/api/v1/encrypted/context",
                    content=public,
                    headers={"content-type": "application/octet-stream"},
                ),
                self.busy_wait,
            )
        ).json()
        if answer.get("context_sha256") != sent:
            raise PrivacyError(
                "the service registered another public context than this device sent; "
                "check the URL (a proxy that alters bodies?)"
            )
        self.context_sha256 = sent
        return sent

    def _renew(self, reason: str | None) -> None:
        """Recover from a 409: re-register this device's context, or follow a new model.
        Everything new is built before anything is replaced: a failure leaves the client as
        it was, never a new spec beside an old policy."""
        if reason != "model_changed":
            self.context_sha256 = self._register()
            return
        spec = self._read_spec()
        same_keys = all(
            spec.get(key) == self.spec.get(key)
            for key in ("layout", "parameters", "n_classes", "max_batch")
        )
        try:
            if same_keys:
                raw = spec.get("policy")
                policy = AlertPolicy.from_dict(raw, "model spec") if raw else None
                client = None
            else:
                client = EncryptedAlertClient.from_spec(spec)
        except TailormlError as error:
            raise PrivacyError(
                f"the service now serves a model this client cannot use ({error}); update "
                "tailorml on this device"
            ) from None
        if client is None:
            self.client.policy = policy
            self.spec = spec
            return
        previous = self.client
        self.client = client
        try:
            self.context_sha256 = self._register()
        except Exception:
            self.client = previous
            raise
        self.spec = spec

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
        """Decrypted logits of one ciphertext's windows. After a 409 for a lost context it
        registers again and retries; for a swapped model it follows the new spec and raises
        `_ModelChanged`, so that every window is asked again of the new model."""
        renewed: set[str] = set()
        while True:
            answer = self.http.post(
                "/api/v1/encrypted/alert",
                content=self.client.encrypt(chunk),
                headers={
                    "content-type": "application/octet-stream",
                    CONTEXT_HEADER: self.context_sha256,
                    MODEL_HEADER: self.spec["model_sha256"],
                },
            )
            if answer.status_code == 409:
                try:
                    reason = answer.json().get("reason")
                except ValueError:
                    reason = None
                if reason in ("context_unknown", "model_changed") and reason not in renewed:
                    renewed.add(reason)
                    self._renew(reason)
                    if reason == "model_changed":
                        raise _ModelChanged()  # ask again from the first window, re-chunked
                    continue
            self._checked(answer)
            served = answer.headers.get(MODEL_HEADER)
            if served != self.spec["model_sha256"]:
                raise PrivacyError(
                    f"the service answered with model {str(served)[:12]}…, not the "
                    f"{self.spec['model_sha256'][:12]}… whose policy this client applies; retry"
                )
            return self.client.decrypt(answer.content, len(chunk))

    def _logits_and_policy(self, windows: np.ndarray) -> tuple[np.ndarray, AlertPolicy | None]:
        """Decrypted logits, `max_batch` windows per request, all from one model (asked
        again from the start if the service's model changed midway), with that model's
        policy."""
        # all windows checked before any is sent: errors name the caller's index
        checked = check_readings(self.client.layout.check_windows(windows), self.client.policy)
        return self._ask_all(checked)

    def _ask_all(self, checked: np.ndarray) -> tuple[np.ndarray, AlertPolicy | None]:
        for _ in range(2):
            size = self.client.max_batch
            try:
                rows = [self._ask(checked[at : at + size]) for at in range(0, len(checked), size)]
            except _ModelChanged:
                continue
            return np.concatenate(rows), self.client.policy
        raise PrivacyError("the service's model changed twice during one request; retry")

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Decrypted logits, `max_batch` windows per request, all from one model."""
        return self._logits_and_policy(windows)[0]

    def alerts(self, windows: np.ndarray) -> WindowAlerts:
        """Per window (NaN marks a missing reading): the rules a device applies before its
        model (`AlertPolicy.screen`), then the encrypted model on the rest. An urgent low
        needs no model; a window with a gap gets no decision (a dropped reading is never an
        alert); only the other windows are encrypted and sent."""
        checked = check_readings(
            self.client.layout.check_windows(windows, allow_missing=True), self.client.policy
        )
        for _ in range(2):
            policy = self.client.policy
            if policy is None:
                raise PrivacyError("the served model's spec has no alert policy")
            urgent, gap = policy.screen(checked)
            decided = np.full(len(checked), -1, dtype=np.int64)
            runs = ~urgent & ~gap
            if runs.any():
                logits, answered_by = self._ask_all(checked[runs])
                if answered_by != policy:  # another model now: screen by its rules
                    continue
                decided[runs] = policy.decide_logits(logits)
            decided[urgent] = policy.alert_index
            status = np.where(urgent, "urgent", np.where(gap, "no_decision", "decided"))
            return WindowAlerts(status, decided)
        raise PrivacyError("the service's model changed twice during one request; retry")

    def decide(self, windows: np.ndarray) -> np.ndarray:
        """Class per window under the alert policy of the model that computed the logits;
        -1 where a window has a missing reading (no decision), the alert class at an urgent
        low (`alerts` says which is which)."""
        return self.alerts(windows).decided


@dataclass(frozen=True)
class WindowAlerts:
    """Per window: `status` ("decided", "urgent" or "no_decision", as the device's
    `tailorml_alert` says it) and the class decided (-1 without a decision)."""

    status: np.ndarray
    decided: np.ndarray
