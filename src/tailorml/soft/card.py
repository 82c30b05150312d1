"""The per-individual model card: what a clinician reads before approving a personalized
model. Rendered from the registry (and the session's stored predictions) only."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tailorml.evaluate.alerts import hypo_events, snooze_alerts
from tailorml.evaluate.plots import to_png
from tailorml.evaluate.report import image_uri, write_html
from tailorml.soft.registry import Registry

GATE_TITLES = {
    "data_sufficiency": "1. Enough representative personal data",
    "safety_non_inferiority": "2. Hypo sensitivity not worse than the predefined model",
    "harmful_states": "3. Still alerts on dangerous traces",
    "general_floor": "4. Accuracy on general data kept",
    "bounded_change": "5. Bounded change from the predefined model",
    "threshold_calibration": "6. Personal alert threshold under a conservative bound",
}


def alerts_figure(
    readings: pd.DataFrame,
    predictions: pd.DataFrame,
    thresholds: dict[str, float],
    task: dict,
    alerts: dict,
    sample_minutes: int,
) -> bytes:
    """Test-period CGM with true hypo events, and below it each candidate's alerts."""
    names = list(thresholds)
    figure, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(11, 3.2 + 0.35 * len(names)),
        sharex=True,
        gridspec_kw={"height_ratios": [3, max(1.2, 0.45 * len(names))]},
    )
    top.plot(readings["time"], readings["cgm"], color="#333333", linewidth=1)
    top.axhline(task["hypo_mgdl"], color="#c44e52", linestyle="--", linewidth=0.8)
    top.axhline(task["hyper_mgdl"], color="#dd8452", linestyle="--", linewidth=0.8)
    events = hypo_events(
        readings["time"].to_numpy(),
        readings["cgm"].to_numpy(),
        task["hypo_mgdl"],
        sample_minutes,
        alerts["event_min_minutes"],
        alerts["event_end_minutes"],
    )
    for event in events:
        top.axvspan(event.start, event.end, color="#c44e52", alpha=0.18)
        bottom.axvspan(event.start, event.end, color="#c44e52", alpha=0.18)
    top.set_ylabel("CGM (mg/dL)")
    top.set_title("Held-out test period (synthetic data): true hypo events shaded")
    times = predictions["time"].to_numpy()
    for row, name in enumerate(names):
        positive = predictions[f"p_hypo::{name}"].to_numpy() >= thresholds[name]
        fired = times[snooze_alerts(times, positive, alerts["snooze_minutes"])]
        bottom.scatter(fired, np.full(len(fired), row), marker="v", color="#c44e52", s=22)
    bottom.set_yticks(range(len(names)), names, fontsize=8)
    bottom.set_ylim(-0.7, len(names) - 0.3)
    bottom.invert_yaxis()
    bottom.set_xlabel("alerts of each candidate at its threshold")
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
                summary["task"],
                summary["alerts"],
                summary["sample_minutes"],
            )
        )
    data_gate = summary["data_gate"] | {"title": GATE_TITLES["data_sufficiency"]}
    return write_html(
        "card.html.j2",
        registry.root / "cards" / f"{individual}.html",
        individual=individual,
        session=session,
        summary=summary,
        data_gate=data_gate,
        candidates=candidates,
        gate_titles=GATE_TITLES,
        reviews=registry.reviews(individual),
        active=registry.active_model(individual),
        history=registry.history(individual),
        audit=registry.audit(individual),
        figure=figure,
    )
