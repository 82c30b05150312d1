"""Which models a stress run compares: saved model files, or one person's personalization
session from the registry (the predefined model and every candidate, each deciding at its
own calibrated threshold, as the gates judged it and as it would run once approved).

The registry source is how personalized variants meet the same shifts as the predefined
model, life changes included (seed 000: "pathologies and lifestyles evolve over time"):
the question is whether a person's proposal stays better than the predefined model when
their sensor or their life changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from tailorml.errors import TailormlError
from tailorml.models.cnn import load_model
from tailorml.registry.models import Registry


@dataclass(frozen=True)
class StressedModel:
    label: str
    model: nn.Module
    path: Path  # the file it was loaded from (hash and provenance in metrics.json)


def from_files(paths: Sequence[str | Path]) -> list[StressedModel]:
    """Saved models; labels are the file stem, or the run folder for RUN/model.pt."""
    files = [Path(path) for path in paths]
    labels: list[str] = []
    for path in files:
        label = path.parent.name if path.stem == "model" and path.parent.name else path.stem
        base, number = label, 1
        while label in labels:
            number += 1
            label = f"{base}-{number}"
        labels.append(label)
    return [
        StressedModel(label, load_model(path), path)
        for label, path in zip(labels, files, strict=True)
    ]


def from_session(registry_dir: str | Path, individual: str) -> list[StressedModel]:
    """The predefined model and every candidate of the individual's newest session, each
    at its own threshold; labels are the candidates' names (with their status)."""
    registry = Registry.existing(registry_dir)
    session_id = registry.latest_session(individual)
    if session_id is None:
        raise TailormlError(
            f"{individual!r} has no personalization session in {registry.root}; run "
            f"`tailorml personalize --individual {individual}` first (ids are case-sensitive)"
        )
    session = registry.session(session_id)
    if not session.candidates:
        raise TailormlError(
            f"session {session_id} of {individual} built no candidates "
            f"({session.refused_reason}); nothing to stress"
        )
    models = []
    for candidate in session.candidates:
        record = registry.model(candidate.model_id)
        registry.verify(record)
        model = load_model(record.path)
        model.policy = model.policy.with_threshold(candidate.threshold)
        models.append(StressedModel(f"{candidate.name} [{candidate.status}]", model, record.path))
    return models


def session_cohort(registry_dir: str | Path, individual: str) -> Path | None:
    """The cohort file the individual's newest session was personalized on, when it is still
    there (a service job's merged cohort was temporary): the default data to stress it on."""
    registry = Registry.existing(registry_dir)
    session_id = registry.latest_session(individual)
    if session_id is None:
        return None
    recorded = registry.session(session_id).summary.get("cohort")
    return Path(recorded) if recorded and Path(recorded).is_file() else None
