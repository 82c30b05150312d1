"""What the review pages show, computed apart from HTTP: the proposal against the current
model in plain words, the patient's last 14 days (consensus metrics, a trace in local time,
the recent alerts), the follow-up of an approved model, and the few fixed messages a
redirect may name.

Everything personal is read through `Service` methods, so access is checked and recorded
there; nothing here writes a file."""

from __future__ import annotations

import html
import math
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import numpy as np
import pandas as pd

from tailorml.data.glycemia import glycemia_metrics
from tailorml.registry.people import Person

MGDL_PER_MMOL = 18.016
UNITS = ("mg/dL", "mmol/L")
DAY_MS = 24 * 3600 * 1000
CONTEXT_DAYS = 14
LOW, HIGH = 70.0, 180.0  # the consensus target band, mg/dL
PREDEFINED = "predefined"  # soft.session.PREDEFINED: the session's baseline candidate

#: What `/review?done=<key>` may say: a key names one of these, any other value says nothing
#: (the query string is the sender's text, never shown).
DONE = {
    "approved": "The candidate was approved: it is now the patient's active model.",
    "rejected": "The candidate was rejected: the patient keeps their current model.",
    "rolled_back": "Rolled back: the patient is back on the predefined model.",
}


def done_message(key: str | None) -> str | None:
    return DONE.get(key or "")


# -- units and time zones --------------------------------------------------------------------


def unit_of(value: str | None) -> str | None:
    """mg/dL or mmol/L from a query or cookie value (`mgdl`, `mmol`, or the unit itself)."""
    return {"mgdl": "mg/dL", "mg/dl": "mg/dL", "mmol": "mmol/L", "mmol/l": "mmol/L"}.get(
        (value or "").strip().lower()
    )


def unit_key(unit: str) -> str:
    return "mmol" if unit == "mmol/L" else "mgdl"


def zone_of(value: str | None) -> str | None:
    """An IANA time zone name the machine knows (None for anything else)."""
    value = (value or "").strip()
    if not value or len(value) > 64 or not re.fullmatch(r"[A-Za-z0-9_+\-/]+", value):
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    return value


def zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


#: The page's choice "the patient's phone" in the time zone menu (it also forgets a zone
#: chosen before).
PHONE = "phone"
_OFFSET_ZONE = re.compile(r"UTC([+-])(\d{2}):(\d{2})")
#: An ISO 8601 time with a numeric offset at its end (a "Z" says the uploader wrote UTC,
#: not where the phone is).
_ISO_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}[^+-]*([+-])(\d{2}):?(\d{2})$")


def offset_zone(minutes: int) -> str:
    """A fixed offset as the pages name it: `UTC+05:30`, `UTC-04:00`."""
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(int(minutes)), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def zone_info(zone: str) -> tzinfo:
    """The tzinfo of an IANA name or of a fixed offset named by `offset_zone`."""
    fixed = _OFFSET_ZONE.fullmatch(zone)
    if fixed:
        minutes = int(fixed[2]) * 60 + int(fixed[3])
        return timezone(timedelta(minutes=-minutes if fixed[1] == "-" else minutes))
    return zoneinfo.ZoneInfo(zone)


def offset_of(record: dict) -> int | None:
    """The phone's offset from UTC in minutes that an uploaded record carries: its
    `utcOffset` (Nightscout's field: AndroidAPS, xDrip+ and Loop send it on entries and
    treatments), else the numeric offset of its `dateString`, `sysTime` or `created_at`."""
    value = record.get("utcOffset")
    if isinstance(value, int | float) and not isinstance(value, bool) and -840 <= value <= 840:
        return int(value)
    for key in ("dateString", "sysTime", "created_at"):
        text = record.get(key)
        found = _ISO_OFFSET.match(text) if isinstance(text, str) else None
        if found:
            minutes = int(found[2]) * 60 + int(found[3])
            if minutes <= 840:
                return -minutes if found[1] == "-" else minutes
    return None


def phone_zone(service, caller: Person, person: Person, entries: list[dict]) -> dict | None:
    """The zone of the patient's phone from their newest upload that carries an offset:
    the readings given (newest first), else their newest treatments, else devicestatus
    (read only when no reading carries one). None when no upload does."""

    def newest(records: list[dict], what: str) -> dict | None:
        for record in records:
            minutes = offset_of(record)
            if minutes is not None:
                return {"zone": offset_zone(minutes), "minutes": minutes, "what": what}
        return None

    found = newest(entries, "reading")
    if found is None:
        treatments = service.treatments(caller, person.id, 50, None, None, None)
        found = newest(treatments, "treatment")
    if found is None:
        statuses = service.documents(caller, "devicestatus", person.id, 20, None, None)
        found = newest(statuses, "devicestatus")
    return found


_MGDL_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*mg/dl", re.IGNORECASE)


def in_unit(text: str, unit: str) -> str:
    """A decision's reason (written in mg/dL) with each of its glucose numbers in `unit`:
    "urgent low: 52 mg/dL" is "urgent low: 2.9 mmol/L" (÷ 18.016, one decimal)."""
    if unit != "mmol/L" or not text:
        return text
    return _MGDL_NUMBER.sub(lambda m: f"{glucose(float(m[1]), unit)} {unit}", text)


def glucose(value_mgdl: float | None, unit: str) -> str:
    """A glucose value in `unit`: mg/dL whole, mmol/L to one decimal."""
    if value_mgdl is None or not math.isfinite(value_mgdl):
        return "–"
    if unit == "mmol/L":
        return f"{value_mgdl / MGDL_PER_MMOL:.1f}"
    return f"{value_mgdl:.0f}"


def share(value: float | None) -> str:
    """A fraction as a percentage to one decimal (time below 54 mg/dL needs it)."""
    number = _finite(value)
    return "–" if number is None else f"{100 * number:.1f} %"


# -- current vs proposed -----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One line of the side by side: what it measures, the two figures, and the change
    in words; `worse` True when the proposal is worse for the patient, False when better,
    None when the same or unknown."""

    key: str
    label: str
    current: str
    proposed: str
    words: str
    worse: bool | None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plural(n: float, word: str) -> str:
    return f"{word}" if abs(n) == 1 else f"{word}s"


def _signed(value: float, digits: int) -> str:
    text = f"{value:+.{digits}f}"
    return text


def compare(
    proposed: dict[str, Any],
    current: dict[str, Any],
    held_out_days: float | None,
    lead_minutes: int = 15,
) -> list[Change]:
    """The proposal's held-out figures against the current model's on the same held-out
    data, line by line; lows are counted from sensitivity × events (both models judged on
    the same events), early warnings per week when the held-out period's length is known."""
    changes: list[Change] = []
    events = _finite(proposed.get("held_out_hypo_events"))
    if events is None:
        events = _finite(current.get("held_out_hypo_events"))
    sens_p, sens_c = (
        _finite(proposed.get("hypo_sensitivity")),
        _finite(current.get("hypo_sensitivity")),
    )
    if events and sens_p is not None and sens_c is not None:
        n = round(events)
        caught_p, caught_c = round(sens_p * events), round(sens_c * events)
        missed_p, missed_c = n - caught_p, n - caught_c
        more = caught_p - caught_c
        if more > 0:
            words = f"{more} more {_plural(more, 'low')} caught"
        elif more < 0:
            words = f"{-more} more {_plural(more, 'low')} missed"
        else:
            words = "the same lows caught"
        words += ", no missed low" if missed_p == 0 else f", {missed_p} of {n} missed"
        changes.append(
            Change(
                "lows",
                f"held-out lows caught (of {n})",
                f"{caught_c} (missed {missed_c})",
                f"{caught_p} (missed {missed_p})",
                words,
                None if more == 0 else more < 0,
            )
        )
    early_p, early_c = (
        _finite(proposed.get("hypo_sensitivity_early")),
        _finite(current.get("hypo_sensitivity_early")),
    )
    if events and early_p is not None and early_c is not None:
        count_p, count_c = round(early_p * events), round(early_c * events)
        if held_out_days:
            week_p, week_c = count_p / held_out_days * 7, count_c / held_out_days * 7
            difference = week_p - week_c
            figures = (f"{week_c:.1f} a week ({count_c})", f"{week_p:.1f} a week ({count_p})")
            words = (
                "the same early warnings"
                if count_p == count_c
                else f"{_signed(difference, 1)} early {_plural(2, 'warning')} a week"
            )
        else:
            difference = count_p - count_c
            figures = (str(count_c), str(count_p))
            words = (
                "the same early warnings"
                if count_p == count_c
                else f"{difference:+d} early {_plural(difference, 'warning')} held out"
            )
        changes.append(
            Change(
                "early",
                f"lows warned at least {lead_minutes} min ahead",
                figures[0],
                figures[1],
                words,
                None if count_p == count_c else count_p < count_c,
            )
        )
    false_p, false_c = (
        _finite(proposed.get("false_alerts_per_day")),
        _finite(current.get("false_alerts_per_day")),
    )
    if false_p is not None and false_c is not None:
        difference = false_p - false_c
        same = abs(difference) < 0.005
        words = (
            "the same false alarms"
            if same
            else f"{_signed(difference, 2)} false {_plural(2, 'alarm')} a day"
        )
        if not same and false_c > 0 and false_p / false_c >= 1.5:
            words += f" (×{false_p / false_c:.1f})"
        changes.append(
            Change(
                "false",
                "false alarms per day",
                f"{false_c:.2f}",
                f"{false_p:.2f}",
                words,
                None if same else difference > 0,
            )
        )
    lead_p, lead_c = (
        _finite(proposed.get("median_lead_minutes")),
        _finite(current.get("median_lead_minutes")),
    )
    if lead_p is not None and lead_c is not None:
        difference = lead_p - lead_c
        same = abs(difference) < 0.5
        changes.append(
            Change(
                "lead",
                "median warning ahead of a low, minutes",
                f"{lead_c:.0f}",
                f"{lead_p:.0f}",
                "the same warning time"
                if same
                else f"{_signed(difference, 0)} min {'earlier' if difference > 0 else 'later'}",
                None if same else difference < 0,
            )
        )
    return changes


def headline(changes: list[Change]) -> str:
    """The side by side in one line: the early warnings, false alarms and missed lows."""
    order = {"early": 0, "false": 1, "lows": 2}
    parts = []
    for change in sorted((c for c in changes if c.key in order), key=lambda c: order[c.key]):
        if change.key == "lows":
            parts.append(change.words.split(", ")[-1])
        else:
            parts.append(change.words)
    return ", ".join(parts)


def baseline_of(session) -> Any | None:
    """The session's predefined candidate: the model as deployed, judged on the same
    held-out data as the proposal."""
    return next((c for c in session.candidates if c.name == PREDEFINED), None)


# -- the patient's last 14 days ----------------------------------------------------------------


def local_times(ms: np.ndarray, zone: str) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(ms, dtype="int64"), unit="ms", utc=True).tz_convert(
        zone_info(zone)
    )


def when(ms: int | None, zone: str) -> str:
    if ms is None:
        return "–"
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .astimezone(zone_info(zone))
        .strftime("%a %d %b %H:%M")
    )


def consensus(times_ms: np.ndarray, cgm: np.ndarray, sample_minutes: int) -> dict[str, Any]:
    """The consensus metrics (data.glycemia) of readings given at their own times: each
    reading is put on the `sample_minutes` grid first, so a gap counts as missing."""
    if len(times_ms) == 0:
        return glycemia_metrics([], np.array([]), sample_minutes)
    step = sample_minutes * 60_000
    slots = (np.asarray(times_ms, dtype="int64") - int(np.min(times_ms))) // step
    frame = pd.DataFrame({"slot": slots, "cgm": np.asarray(cgm, dtype=float)})
    per_slot = frame.groupby("slot")["cgm"].mean()
    full = per_slot.reindex(range(int(slots.max()) + 1))
    times = pd.to_datetime(int(np.min(times_ms)) + full.index.to_numpy() * step, unit="ms")
    return glycemia_metrics(times, full.to_numpy(), sample_minutes)


def glucose_figure(
    times_ms: np.ndarray, cgm: np.ndarray, zone: str, unit: str, since_ms: int, until_ms: int
) -> bytes:
    """The readings of the period in local time, in `unit`, with the 70–180 mg/dL band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from tailorml.evaluate.plots import to_png

    scale = MGDL_PER_MMOL if unit == "mmol/L" else 1.0
    figure, axis = plt.subplots(figsize=(10, 2.8))
    axis.axhspan(LOW / scale, HIGH / scale, color="#2e7d32", alpha=0.10, linewidth=0)
    axis.axhline(LOW / scale, color="#c44e52", linestyle="--", linewidth=0.8)
    axis.axhline(HIGH / scale, color="#dd8452", linestyle="--", linewidth=0.8)
    if len(times_ms):
        local = local_times(times_ms, zone).tz_localize(None)
        values = np.asarray(cgm, dtype=float) / scale
        # a gap of more than 15 minutes is drawn as a gap
        gaps = np.flatnonzero(np.diff(np.asarray(times_ms)) > 15 * 60_000) + 1
        for start, end in zip(np.r_[0, gaps], np.r_[gaps, len(values)], strict=True):
            axis.plot(local[start:end], values[start:end], color="#333333", linewidth=0.9)
    edges = local_times(np.array([since_ms, until_ms]), zone).tz_localize(None)
    axis.set_xlim(edges[0], edges[1])
    axis.set_ylim(40 / scale, 400 / scale)
    axis.set_ylabel(f"CGM ({unit})")
    axis.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
    band = f"{glucose(LOW, unit)}–{glucose(HIGH, unit)} {unit}"
    axis.set_xlabel(f"local time ({zone}); band: {band} target")
    figure.autofmt_xdate()
    return to_png(figure)


def readings_between(
    service, caller: Person, person: Person, since: int, until: int
) -> tuple[np.ndarray, np.ndarray]:
    """The person's CGM readings in [since, until] (epoch ms, mg/dL) in time order, opened
    with their data key through the Service, which records the read."""
    return _readings_of(_sgv_entries(service, caller, person, since, until))


def _sgv_entries(service, caller: Person, person: Person, since: int, until: int) -> list:
    count = (until - since) // 60_000 + 2  # more than a reading a minute never happens
    return service.entries(caller, person.id, count, since, until, "sgv")


def _readings_of(entries: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    points = sorted(
        (int(e["date"]), float(e["sgv"]))
        for e in entries
        if _finite(e.get("sgv")) is not None and e.get("date") is not None
    )
    times = np.array([t for t, _ in points], dtype="int64")
    return times, np.array([v for _, v in points], dtype=float)


def patient_context(
    service,
    caller: Person,
    person: Person,
    unit: str,
    zone: str | None,
    days: int = CONTEXT_DAYS,
) -> dict[str, Any]:
    """The person's last `days` days: readings (opened with their data key through the
    Service, which records the read), the consensus metrics, a trace and recent alerts.
    Times are in `zone` (the viewer's choice), or with None in the offset of the patient's
    phone from their newest upload that carries one (`phone_zone`), else UTC."""
    from tailorml.evaluate.report import image_uri

    until = service.live.now_ms()
    since = until - days * DAY_MS
    policy = service.live.policy_of(person.id)
    entries = _sgv_entries(service, caller, person, since, until)
    times, cgm = _readings_of(entries)
    phone = phone_zone(service, caller, person, entries) if zone is None else None
    source = "chosen" if zone is not None else "phone" if phone is not None else "default"
    if zone is not None:
        zone_why = "chosen on this page (remembered in a cookie)"
    elif phone is not None:
        zone = phone["zone"]
        zone_why = (
            f"the patient's phone's offset, from their last upload that carries one "
            f"(a {phone['what']})"
        )
    else:
        zone = "UTC"
        zone_why = "no upload of the patient carries their phone's offset; choose a time zone"
    metrics = consensus(times, cgm, policy.sample_minutes)
    found = service.alerts(caller, person.id, 5000, since, until)
    sounding = [a for a in found if a.get("decision") in ("alert", "urgent")]
    return {
        "days": days,
        "unit": unit,
        "zone": zone,
        "zone_why": zone_why,
        "zone_source": source,
        "readings": len(times),
        "sample_minutes": policy.sample_minutes,
        # of the whole period's slots (the metrics' own sufficiency spans first to last)
        "coverage": min(
            1.0,
            len(np.unique(times // (policy.sample_minutes * 60_000)))
            / (days * 1440 / policy.sample_minutes),
        ),
        "metrics": metrics,
        "mean": glucose(metrics.get("mean_mgdl"), unit),
        "band": f"{glucose(LOW, unit)}–{glucose(HIGH, unit)} {unit}",
        "low_54": f"{glucose(54, unit)} {unit}",
        "low_70": f"{glucose(LOW, unit)} {unit}",
        "high_180": f"{glucose(HIGH, unit)} {unit}",
        "high_250": f"{glucose(250, unit)} {unit}",
        "figure": image_uri(glucose_figure(times, cgm, zone, unit, since, until))
        if len(times)
        else None,
        "alerts_per_day": len(sounding) / days,
        "alerts": [
            {
                "when": when(a.get("reading_ms"), zone),
                "decision": a.get("decision"),
                "kind": a.get("kind") or "",
                "cgm": glucose(_finite(a.get("cgm")), unit),
                "reason": in_unit(a.get("reason") or "", unit),
            }
            for a in sounding[:12]
        ],
        "newest": when(int(times[-1]), zone) if len(times) else None,
    }


# -- the model card as the review page shows it -----------------------------------------------


_CLI = re.compile(
    r"A reviewer decides: <code>tailorml review approve (\d+) --reviewer NAME</code> or "
    r"<code>reject</code>\."
)


def card_for_page(card: str, person: Person) -> str:
    """The model card as the service shows it: the person by name (id beside), a viewport
    for phones, and the review page's buttons instead of the CLI's command line."""
    name = html.escape(person.name)
    card = card.replace(
        '<meta charset="utf-8">',
        '<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, '
        'initial-scale=1">',
        1,
    )
    card = card.replace(
        f"<h1>Model card: {html.escape(person.id)}</h1>",
        f'<h1>Model card: {name} <span class="muted">{html.escape(person.id)}</span></h1>',
        1,
    )
    return _CLI.sub(
        lambda m: (
            f'The assigned clinician decides on the review page: <a href="/review/'
            f'candidates/{m.group(1)}" target="_top">approve or reject candidate {m.group(1)}</a>.'
        ),
        card,
    )


# -- how an approved model has done since ------------------------------------------------------

FOLLOW_UP_MIN_DAYS = 7  # fewer days of follow-up: figures shown, no judgement
FOLLOW_UP_MAX_DAYS = 28  # a model approved longer ago is judged on its last 28 days


def follow_up(
    service, caller: Person, person: Person, active, now_ms: int
) -> dict[str, Any] | None:
    """How the active personalized model has done since its approval, from the person's own
    readings and the service's decisions, counted as the offline figures count
    (`tailorml.alerts`: hypo events from the readings, an alert raised when the service said
    alert or urgent, a low caught when a decision held hypo in the horizon before it, a
    false alert when no low came within the horizon and the reading was in range), beside
    what the candidate showed on held-out data when it was approved. A warning when it does
    clearly worse: over half again as many false alerts a day (and at least 0.5 more), or a
    share of lows alerted early 0.2 lower, once there are `FOLLOW_UP_MIN_DAYS` days."""
    from tailorml.alerts import event_leads, false_alerts

    if active.kind != "personalized" or active.candidate_id is None or not active.created:
        return None
    approved_ms = int(datetime.fromisoformat(active.created).timestamp() * 1000)
    since = max(approved_ms, now_ms - FOLLOW_UP_MAX_DAYS * DAY_MS)  # the page stays quick
    days = max((now_ms - since) / DAY_MS, 0.0)
    policy = service.live.policy_of(person.id)
    times_ms, cgm = readings_between(service, caller, person, since, now_ms)
    latest: dict[int, dict] = {}
    for decision in service.alerts(caller, person.id, 100_000, since, now_ms):  # newest first
        latest.setdefault(int(decision["reading_ms"]), decision)
    times = times_ms.astype("datetime64[ms]").astype("datetime64[ns]")
    events = policy.hypo_events(times, cgm)
    decided = [latest.get(int(t), {}) for t in times_ms]
    decision = np.array([d.get("decision") for d in decided], dtype=object)
    kind = np.array([d.get("kind") for d in decided], dtype=object)
    hypo = (kind == "hypo") | (decision == "urgent")
    held = hypo & np.isin(decision, ["alert", "urgent", "snoozed"])
    raised = hypo & np.isin(decision, ["alert", "urgent"])
    leads = event_leads(events, times, held, policy.horizon_minutes)
    horizon = np.timedelta64(policy.horizon_minutes, "m")
    in_low = np.array(
        [any(e.start - horizon <= t <= e.end for e in events) for t in times], dtype=bool
    )
    false = false_alerts(raised, in_low, cgm, policy.hypo_mgdl)
    evaluable = leads[~np.isnan(leads)]
    shown = {
        "days": days,
        "whole": since == approved_ms,  # False: only the last FOLLOW_UP_MAX_DAYS days
        "lows": len(events),
        "caught": int((evaluable >= 0).sum()),
        "early": int((evaluable >= policy.useful_lead_minutes).sum()),
        "missed": int((evaluable < 0).sum()),
        "alerts_per_day": float(raised.sum()) / days if days else None,
        "false_per_day": float(false.sum()) / days if days else None,
    }
    approved = service.registry.candidate(active.candidate_id).metrics
    shown["approved_false_per_day"] = _finite(approved.get("false_alerts_per_day"))
    shown["approved_early"] = _finite(approved.get("hypo_sensitivity_early"))
    shown["early_share"] = shown["early"] / len(evaluable) if len(evaluable) else None
    shown["warnings"] = _follow_up_warnings(shown) if days >= FOLLOW_UP_MIN_DAYS else []
    shown["too_short"] = days < FOLLOW_UP_MIN_DAYS
    return shown


def _follow_up_warnings(shown: dict[str, Any]) -> list[str]:
    warnings = []
    then, now = shown["approved_false_per_day"], shown["false_per_day"]
    if then is not None and now is not None and now > 1.5 * then and now - then >= 0.5:
        warnings.append(
            f"{now:.2f} false alarms a day since approval, against {then:.2f} on held-out data"
        )
    then, now = shown["approved_early"], shown["early_share"]
    if then is not None and now is not None and now < then - 0.2:
        warnings.append(
            f"{share(now)} of lows alerted early since approval, against {share(then)} on "
            "held-out data"
        )
    return warnings
