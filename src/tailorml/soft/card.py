"""The per-individual model card: what a clinician reads before approving a personalized
model. Rendered from the registry (and the session's stored predictions) only."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tailorml.evaluate.alerts import false_alerts, snooze_alerts
from tailorml.evaluate.plots import to_png
from tailorml.evaluate.report import image_uri, write_html
from tailorml.io import encode_component
from tailorml.policy import AlertPolicy
from tailorml.registry.models import Registry
from tailorml.soft.gates import gate_identity


def _gate_heading(name: str) -> str:
    identity = gate_identity(name)
    return identity.heading() if identity else name


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
        positive = predictions[f"p_hypo::{name}"].to_numpy() >= thresholds[name]
        alerts = snooze_alerts(times, positive, policy.snooze_minutes)
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


def render_card(registry: Registry, session_id: int) -> Path:
    session = registry.session(session_id)
    individual = session.individual
    summary = session.summary
    candidates = session.candidates
    figure = None
    if candidates and summary.get("artifacts"):
        folder = registry.root / "artifacts" / summary["artifacts"]
        readings = pd.read_parquet(folder / "readings.parquet")
        predictions = pd.read_parquet(folder / "predictions.parquet")
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
    return write_html(
        "card.html.j2",
        registry.root / "cards" / f"{encode_component(individual)}.html",
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
