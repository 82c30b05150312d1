"""The local round trip of encrypted alerts on a run's test windows (`tailorml privacy
check`): the client encrypts, the server evaluates, the client decrypts and decides; the
result is compared with the plaintext HE-friendly model window by window.

Reports agreement (largest logit difference, decisions that differ), latency per window
(encrypt, evaluate, decrypt) and sizes (public context, ciphertext up, logits down).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tenseal as ts

from tailorml.client import EncryptedAlertClient
from tailorml.data.prepared import Prepared, prepare
from tailorml.errors import TailormlError
from tailorml.io import atomic_write_json
from tailorml.models.cnn import load_model, require_model_file
from tailorml.models.train import use_threads
from tailorml.policy import AlertPolicy
from tailorml.privacy.context import load_public
from tailorml.privacy.plan import torch_logits
from tailorml.privacy.server import (
    EncryptedModel,
    evaluate_encrypted,
    forward_checked,
    read_window,
)
from tailorml.privacy.wire import fingerprint, pack_parts
from tailorml.progress import SILENT, Reporter
from tailorml.robust.evaluate import evenly_spaced
from tailorml.runs import Run

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


def check_run(
    run_dir: str | Path,
    model_path: str | Path | None = None,
    individuals: int = 3,
    max_windows: int = 0,
    batch: int = 1,
    reporter: Reporter = SILENT,
) -> dict:
    """Encrypt, evaluate and decrypt the test windows of `individuals` people of a run
    (at most `max_windows` each, 0 = all), `batch` windows per ciphertext; write
    privacy_check.json into the run and return it."""
    run = Run.open(run_dir)
    config = run.config()
    model_file = Path(model_path) if model_path else run.file("model.pt")
    if model_path:
        require_model_file(model_file, "--model")
    elif not model_file.is_file():
        raise TailormlError(f"no model at {model_file}; train one first or pass --model")
    use_threads(config.train.threads)
    try:  # read once: the record names the bytes checked, even if the file changes meanwhile
        model_data = model_file.read_bytes()
    except OSError as error:
        raise TailormlError(f"cannot read model file {model_file} ({error.strerror})") from None
    checked = fingerprint(model_data)
    model = load_model(model_file, data=model_data)
    encrypted = EncryptedModel(model, str(model_file))
    if not 1 <= batch <= encrypted.plan.max_batch:
        raise TailormlError(
            f"--batch {batch}: one ciphertext holds 1 to {encrypted.plan.max_batch} windows "
            "of this model"
        )
    prepared = prepare(config)
    model.policy.require_same_input(
        AlertPolicy.from_config(config, prepared.windows.sample_minutes),
        str(model_file),
        f"the cohort of {run.path}",
    )
    reporter.log(f"{encrypted.plan.parameters.describe()}; depth {encrypted.plan.depth}")
    began = time.perf_counter()
    client = EncryptedAlertClient.from_spec(encrypted.public_spec())
    keys_seconds = time.perf_counter() - began
    public = client.public_context()
    began = time.perf_counter()
    server_context = load_public(public, encrypted.plan.parameters)
    context_load_seconds = time.perf_counter() - began
    sizes = {"public_context_bytes": len(public)}
    timings, rows = Timings(), []
    people = people_with_test(prepared, individuals)
    if not people:
        raise TailormlError(f"no individual of {run.path} has test windows to check")
    with reporter.task("encrypted round trips", total=len(people)) as task:
        for person in people:
            indices = prepared.splits.of(person, PART)
            windows = prepared.windows.x[evenly_spaced(indices, max_windows)]
            plain = torch_logits(model, windows)
            encrypted_logits = round_trip(
                encrypted, client, server_context, windows, batch, timings, sizes
            )
            rows.append({"individual": person, **agreement(model.policy, plain, encrypted_logits)})
            task.advance()
    # once, cold: what one request costs a server that loads the context from bytes
    first = prepared.windows.x[prepared.splits.of(people[0], PART)[:batch]]
    began = time.perf_counter()
    evaluate_encrypted(encrypted, public, client.encrypt(first))
    cold_seconds = time.perf_counter() - began
    result = {
        "model": str(model_file),
        "model_sha256": checked,
        "synthetic": prepared.cohort.synthetic,
        "parameters": encrypted.plan.parameters.to_dict(),
        "depth": encrypted.plan.depth,
        "batch": batch,
        "logit_tolerance": LOGIT_TOLERANCE,
        "individuals": rows,
        "windows": int(sum(row["windows"] for row in rows)),
        "max_logit_difference": max(row["max_logit_difference"] for row in rows),
        "decisions_differ": int(sum(row["decisions_differ"] for row in rows)),
        "passed": bool(
            all(row["decisions_differ"] == 0 for row in rows)
            and all(row["max_logit_difference"] <= LOGIT_TOLERANCE for row in rows)
        ),
        "seconds_per_window": timings.per_window(),
        "seconds": {
            "client_keys": keys_seconds,
            "server_context_load": context_load_seconds,
            "cold_request": cold_seconds,
        },
        "sizes": sizes,
    }
    # the run's record is about the run's model (by content: a link or a copy of it is it);
    # another model's check is kept beside it
    own_file = run.file("model.pt")
    own = model_path is None or (
        own_file.is_file() and fingerprint(own_file.read_bytes()) == checked
    )
    suffix = "" if own else f"_{checked[:12]}"
    target = run.file(f"privacy_check{suffix}.json")
    try:
        atomic_write_json(target, result)
        result["saved_to"] = str(target)
    except (OSError, TailormlError) as error:  # the round trips are not lost: the caller shows them
        reason = getattr(error, "strerror", None) or str(error)
        result["save_error"] = f"could not write {target} ({reason}); the figures above are unsaved"
    return result
