"""The per-individual model card: what a clinician reads before approving a personalized
model. Rendered from the registry (and the session's stored predictions) only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tailorml.alerts import false_alerts, held_on, raise_alerts
from tailorml.evaluate.plots import to_png
from tailorml.evaluate.report import image_uri, template_environment
from tailorml.io import atomic_write_text, encode_component
from tailorml.policy import AlertPolicy
from tailorml.registry.models import Registry
from tailorml.soft.gates import gate_identity


def _gate_heading(name: str) -> str:
    identity = gate_identity(name)
    return identity.heading() if identity else name


def candidate_alerts(predictions: pd.DataFrame, name: str, policy: AlertPolicy) -> np.ndarray:
    """The alerts candidate `name` raised on the test period under `policy` (at its own
    threshold), with the safety rules; cards stored before the readings were kept with the
    predictions get the plain snooze they were judged with."""
    probability = predictions[f"p_hypo::{name}"].to_numpy()
    times = predictions["time"].to_numpy()
    if "previous_cgm" not in predictions:
        return raise_alerts(times, probability >= policy.threshold, policy.snooze_minutes)
    current = predictions["current_cgm"].to_numpy()
    previous = predictions["previous_cgm"].to_numpy()
    urgent = policy.urgent_lows(current, previous)
    positive = held_on(probability, policy.threshold, policy.hysteresis, urgent)
    return policy.raised(times, positive, current, previous)


def alerts_figure(
    readings: pd.DataFrame,
    predictions: pd.DataFrame,
    thresholds: dict[str, float],
    policy: AlertPolicy,
    synthetic: bool,
) -> bytes:
    """Test-period CGM with true hypo events (under the predefined model's `policy`), and
    below it each candidate's alerts at its own threshold."""
    names = list(thresholds)
    figure, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(11, 3.2 + 0.35 * len(names)),
        sharex=True,
        gridspec_kw={"height_ratios": [3, max(1.2, 0.45 * len(names))]},
    )
    top.plot(readings["time"], readings["cgm"], color="#333333", linewidth=1)
    top.axhline(policy.hypo_mgdl, color="#c44e52", linestyle="--", linewidth=0.8)
    top.axhline(policy.hyper_mgdl, color="#dd8452", linestyle="--", linewidth=0.8)
    events = policy.hypo_events(readings["time"].to_numpy(), readings["cgm"].to_numpy())
    for event in events:
        top.axvspan(event.start, event.end, color="#c44e52", alpha=0.18)
        bottom.axvspan(event.start, event.end, color="#c44e52", alpha=0.18)
    top.set_ylabel("CGM (mg/dL)")
    labelled = " (synthetic data)" if synthetic else ""
    top.set_title(f"Held-out test period{labelled}: true hypo events shaded")
    times = predictions["time"].to_numpy()
    judged = "label_is_hypo" in predictions  # cards written before it was stored: one style
    for row, name in enumerate(names):
        alerts = candidate_alerts(predictions, name, policy.with_threshold(thresholds[name]))
        false = (
            false_alerts(
                alerts, predictions["label_is_hypo"], predictions["current_cgm"], policy.hypo_mgdl
            )
            if judged
            else np.zeros(len(alerts), dtype=bool)
        )
        true = alerts & ~false
        bottom.scatter(times[true], np.full(true.sum(), row), marker="v", color="#2e7d32", s=22)
        bottom.scatter(times[false], np.full(false.sum(), row), marker="x", color="#c62828", s=26)
    bottom.set_yticks(range(len(names)), names, fontsize=8)
    bottom.set_ylim(-0.7, len(names) - 0.3)
    bottom.invert_yaxis()
    bottom.set_xlabel(
        "alerts of each candidate at its threshold"
        + (" (green: a low now or within the horizon; red x: false alert)" if judged else "")
    )
    figure.autofmt_xdate()
    return to_png(figure)


ArtifactReader = Callable[[Path], "pd.DataFrame | None"]


def read_artifact(path: Path) -> pd.DataFrame | None:
    """A session's stored table as `tailorml personalize` writes it (parquet in the clear);
    None when it is not there (deleted on erasure, or sealed by the service)."""
    return pd.read_parquet(path) if path.is_file() else None


def card_html(registry: Registry, session_id: int, read: ArtifactReader = read_artifact) -> str:
    """The card of a session's individual as HTML; `read` opens the session's stored tables
    (the service passes one that opens them sealed, so they never sit on disk in the clear).
    Without its tables the card is drawn without the trace plot."""
    session = registry.session(session_id)
    individual = session.individual
    summary = session.summary
    candidates = session.candidates
    figure = None
    if candidates and str(summary.get("artifacts") or "").isalnum():
        folder = registry.root / "artifacts" / summary["artifacts"]
        readings = read(folder / "readings.parquet")
        predictions = read(folder / "predictions.parquet")
        if readings is not None and predictions is not None:
            figure = image_uri(
                alerts_figure(
                    readings,
                    predictions,
                    {c.name: c.threshold for c in candidates},
                    AlertPolicy.from_dict(summary["policy"], "session summary"),
                    bool(summary.get("synthetic", True)),
                )
            )
    data_gate = summary["data_gate"] | {"title": _gate_heading(summary["data_gate"]["gate"])}
    return (
        template_environment()
        .get_template("card.html.j2")
        .render(
            individual=individual,
            session=session,
            summary=summary,
            data_gate=data_gate,
            candidates=candidates,
            gate_heading=_gate_heading,
            reviews=registry.reviews(individual),
            active=registry.active_model(individual),
            history=registry.history(individual),
            audit=registry.audit(individual),
            figure=figure,
        )
    )


def card_path(registry: Registry, individual: str) -> Path:
    return registry.root / "cards" / f"{encode_component(individual)}.html"


def render_card(registry: Registry, session_id: int) -> Path:
    """Write the card of a session's individual beside the registry (atomically)."""
    html = card_html(registry, session_id)
    return atomic_write_text(card_path(registry, registry.session(session_id).individual), html)
