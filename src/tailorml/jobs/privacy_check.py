"""`tailorml privacy check`: the encrypted round trip (`privacy.check`) on a run's test
windows, against the plaintext HE-friendly model.

Reports agreement (largest logit difference, decisions that differ), latency per window
(encrypt, evaluate, decrypt) and sizes (public context, ciphertext up, logits down), written
to RUN/privacy_check.json from the result object (`PrivacyCheckResult`) the CLI prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailorml.config import Config
from tailorml.data.prepared import prepare
from tailorml.errors import TailormlError
from tailorml.io import atomic_write_json
from tailorml.jobs.result import as_json
from tailorml.models.cnn import load_model
from tailorml.models.train import use_threads
from tailorml.policy import AlertPolicy
from tailorml.privacy.check import (
    LOGIT_TOLERANCE,
    PART,
    Timings,
    agreement,
    people_with_test,
    round_trip,
)
from tailorml.privacy.client import EncryptedAlertClient
from tailorml.privacy.context import load_public
from tailorml.privacy.plan import torch_logits
from tailorml.privacy.server import EncryptedModel, evaluate_encrypted
from tailorml.privacy.wire import fingerprint
from tailorml.progress import SILENT, Reporter
from tailorml.robust.evaluate import evenly_spaced
from tailorml.runs import Run


@dataclass
class PrivacyCheckResult:
    """The figures of one check (as privacy_check.json holds them) and where they were
    saved, or why they could not be."""

    figures: dict[str, Any]
    saved_to: Path | None = None
    save_error: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.figures["passed"])

    def to_json(self) -> dict[str, Any]:
        saved = {"saved_to": str(self.saved_to)} if self.saved_to else {}
        error = {"save_error": self.save_error} if self.save_error else {}
        return as_json(self.figures | saved | error)


def run(
    run_dir: str | Path,
    model_path: str | Path | None = None,
    config: Config | None = None,
    reporter: Reporter = SILENT,
) -> PrivacyCheckResult:
    """Encrypt, evaluate and decrypt the test windows of `privacy.individuals` people of a
    run (at most `privacy.max_windows` each, 0 = all), `privacy.batch` windows per
    ciphertext; write privacy_check.json (with those settings) into the run and return its
    figures. `config`: the run's own, with the command's `[privacy]` options."""
    run = Run.open(run_dir)
    config = config or run.config()
    settings = config.privacy
    individuals, max_windows, batch = settings.individuals, settings.max_windows, settings.batch
    model_file = run.model_file(model_path)
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
        "settings": settings.model_dump(mode="json"),
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
    checked_result = PrivacyCheckResult(result)
    try:
        atomic_write_json(target, checked_result.figures)
        checked_result.saved_to = target
    except (OSError, TailormlError) as error:  # the round trips are not lost: the caller shows them
        reason = getattr(error, "strerror", None) or str(error)
        checked_result.save_error = (
            f"could not write {target} ({reason}); the figures above are unsaved"
        )
    return checked_result
