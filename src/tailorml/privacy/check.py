"""The local round trip of encrypted alerts on test windows: the client encrypts, the server
evaluates, the client decrypts and decides; the result is compared with the plaintext
HE-friendly model window by window (the `tailorml privacy check` job: `jobs.privacy_check`).

Reports agreement (largest logit difference, decisions that differ), latency per window
(encrypt, evaluate, decrypt) and sizes (public context, ciphertext up, logits down).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from tailorml.data.prepared import Prepared
from tailorml.policy import AlertPolicy
from tailorml.privacy.client import EncryptedAlertClient
from tailorml.privacy.server import (
    EncryptedModel,
    forward_checked,
    read_window,
)
from tailorml.privacy.wire import pack_parts

PART = "test"
# CKKS is approximate: encrypted logits may differ from the plaintext model's by this much
# (absolute). Measured differences on the shipped cohort are below 1e-3 (BENCHMARKS.md).
LOGIT_TOLERANCE = 1e-2


@dataclass
class Timings:
    """Seconds per ciphertext of each step, to be divided by the windows it held."""

    encrypt: list[float] = field(default_factory=list)
    evaluate: list[float] = field(default_factory=list)
    decrypt: list[float] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)

    def per_window(self) -> dict[str, float]:
        """Median seconds per window of each step and end to end."""
        counts = np.asarray(self.windows, dtype=float)
        steps = {
            name: np.asarray(getattr(self, name)) / counts
            for name in ("encrypt", "evaluate", "decrypt")
        }
        steps["end_to_end"] = sum(steps.values())
        return {name: float(np.median(values)) for name, values in steps.items()}


def people_with_test(prepared: Prepared, count: int) -> list[str]:
    """`count` individuals with test windows, spread evenly over the sorted ids."""
    people = sorted(i for i in prepared.cohort.ids if len(prepared.splits.of(i, PART)))
    if count <= 0 or not people:
        return []
    picks = np.unique(np.linspace(0, len(people) - 1, min(count, len(people))).round())
    return [people[int(i)] for i in picks]


def round_trip(
    encrypted: EncryptedModel,
    client: EncryptedAlertClient,
    server_context: ts.Context,
    windows: np.ndarray,
    batch: int,
    timings: Timings,
    sizes: dict[str, int],
) -> np.ndarray:
    """Encrypted logits of `windows`, `batch` per ciphertext, timing every step. The server
    evaluates each ciphertext under `server_context` (the client's public context, read once
    per person as a service would); decryption happens on the client."""
    outputs = []
    for start in range(0, len(windows), batch):
        chunk = windows[start : start + batch]
        began = time.perf_counter()
        upload = client.encrypt(chunk)
        encrypted_at = time.perf_counter()
        vector = read_window(server_context, upload, encrypted.plan.parameters)
        answer = pack_parts([logit.serialize() for logit in forward_checked(encrypted, vector)])
        evaluated_at = time.perf_counter()
        outputs.append(client.decrypt(answer, len(chunk)))
        decrypted_at = time.perf_counter()
        timings.encrypt.append(encrypted_at - began)
        timings.evaluate.append(evaluated_at - encrypted_at)
        timings.decrypt.append(decrypted_at - evaluated_at)
        timings.windows.append(len(chunk))
        sizes["upload_bytes"] = max(sizes.get("upload_bytes", 0), len(upload))
        sizes["download_bytes"] = max(sizes.get("download_bytes", 0), len(answer))
    return np.concatenate(outputs)


def agreement(policy: AlertPolicy, plain: np.ndarray, encrypted: np.ndarray) -> dict:
    """How closely encrypted logits follow the plaintext model's, and their decisions."""
    plain_p, encrypted_p = AlertPolicy.probabilities(plain), AlertPolicy.probabilities(encrypted)
    alert = policy.alert_index
    margin = np.abs(plain_p[:, alert] - policy.threshold) if alert is not None else None
    return {
        "windows": len(plain),
        "max_logit_difference": float(np.abs(plain - encrypted).max()),
        "max_probability_difference": float(np.abs(plain_p - encrypted_p).max()),
        "decisions_differ": int((policy.decide(plain_p) != policy.decide(encrypted_p)).sum()),
        "alerts_plain": int((policy.decide(plain_p) == alert).sum()) if alert is not None else 0,
        "closest_to_threshold": float(margin.min()) if margin is not None else None,
    }
