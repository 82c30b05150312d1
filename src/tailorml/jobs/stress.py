"""`tailorml stress`: one or more saved models under realistic shifts of their test data.

Sensor faults run on the held-out test part of the default chronological split (the part the
train job reports), so "unshifted" is the figure the train run already shows. Life changes
(`--life`) re-simulate new days of the same virtual patients and compare with the same new
days unchanged. Every model meets the same faulted readings (seeded), so models compare
paired, per individual. Output: tidy CSV tables, metrics.json and report.html.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from torch import nn

from tailorml.config import SplitConfig
from tailorml.data.cohort import Cohort, load_cohort
from tailorml.data.glucose import make_windows
from tailorml.data.prepared import Prepared, prepare_whole
from tailorml.data.splits import split_windows
from tailorml.errors import TailormlError
from tailorml.evaluate.job import require_model_input
from tailorml.io import atomic_write_json, atomic_write_text, sha256_file
from tailorml.progress import SILENT, Reporter
from tailorml.shift import life, suite
from tailorml.shift.sources import StressedModel
from tailorml.shift.summary import paired_drops, summarize_drops

OUT_IS_FILE = "--out {path} is a file; give a folder (it is created if missing)"


def require_out_folder(out_dir: str | Path) -> Path:
    """The output folder, refused early (before models load) when it is a file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TailormlError(OUT_IS_FILE.format(path=out))
    return out


def _prepare_split(cohort: Cohort, model: nn.Module) -> Prepared:
    windows = make_windows(cohort, model.policy.task())
    return Prepared(cohort, windows, split_windows(cohort, windows, SplitConfig()))


def stress_models(
    sources: Sequence[StressedModel],
    cohort_path: str | Path | None,
    out_dir: str | Path,
    seed: int = 0,
    with_life: bool = False,
    life_days: int = 3,
    life_patients: Sequence[str] = (),
    reporter: Reporter = SILENT,
    individuals: Sequence[str] = (),
) -> Path:
    """Run the stress suite for every model (`shift.sources`); write the tables and report
    into `out_dir`. `individuals` restricts the cohort (and the life changes) to them."""
    if not sources:
        raise TailormlError(
            "no model given; pass --model RUN/model.pt (repeat for several) or --individual ID"
        )
    out = require_out_folder(out_dir)
    models = [source.model for source in sources]
    labels = [source.label for source in sources]
    paths = [source.path for source in sources]
    cohort = load_cohort(cohort_path, list(individuals) or None)
    tasks = {
        json.dumps(model.policy.task().model_dump(mode="json"), sort_keys=True) for model in models
    }
    if len(tasks) > 1:
        raise TailormlError(
            "the models have different tasks (window, horizon, channels or thresholds); "
            "stress models of one task together, and the others in another call"
        )
    for model, path in zip(models, paths, strict=True):
        require_model_input(model, cohort, path)
    if cohort.synthetic:
        reporter.log(
            "cohort is SYNTHETIC (simulated); figures are not clinical evidence", style="yellow"
        )
    patients = _life_patients(cohort, life_patients or individuals) if with_life else []
    prepared = _prepare_split(cohort, models[0])
    out.mkdir(parents=True, exist_ok=True)  # only once the input is known to be good
    pairs = list(zip(labels, models, strict=True))
    with reporter.task("sensor faults", total=1) as task:
        per_individual, envelope = suite.run_sensor_suite(pairs, prepared, seed)
        task.advance()
    references = {shift: suite.CLEAN for shift in per_individual["shift"].unique()}
    life_table = pd.DataFrame()
    if with_life:
        with reporter.task(f"life changes ({len(patients)} patients)", total=1) as task:
            cohorts = life.simulate_life(patients, life_days, seed, out / "life")
            life_rows = []
            for scenario, scenario_cohort in cohorts.items():
                whole = prepare_whole(scenario_cohort, models[0].policy.task())
                traces = {
                    i: (scenario_cohort.of(i)["cgm"].to_numpy(float),) * 2
                    for i in scenario_cohort.ids
                }
                for label, model in pairs:
                    for row in suite.evaluate_shift(model, whole, traces, "all"):
                        life_rows.append({"model": label, "shift": scenario, "kind": "life"} | row)
            per_individual = pd.concat([per_individual, pd.DataFrame(life_rows)], ignore_index=True)
            references |= {scenario: life.UNCHANGED for scenario in cohorts}
            life_table = life.describe(cohorts)
            task.advance()
    drops = paired_drops(per_individual, references)
    summary = summarize_drops(drops)
    per_individual.to_csv(out / "per_individual.csv", index=False)
    drops.to_csv(out / "drops.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    envelope.to_csv(out / "icgm_envelope.csv", index=False)
    if not life_table.empty:
        life_table.to_csv(out / "life_scenarios.csv", index=False)
    atomic_write_json(
        out / "metrics.json",
        {
            "synthetic": cohort.synthetic,
            "cohort": cohort.source,
            "seed": seed,
            "individuals": list(individuals) or "all",
            "part": "test (default chronological split 0.6/0.2/0.2)",
            "models": [
                {
                    "label": label,
                    "file": str(path.resolve()),
                    "sha256": sha256_file(path),
                    "threshold": model.policy.threshold,
                }
                for label, path, model in zip(labels, paths, models, strict=True)
            ],
            "shifts": {shift.name: shift.description for shift in suite.sensor_shifts()}
            | ({name: text for name, text in life.SCENARIOS.items()} if with_life else {}),
            "life_days": life_days if with_life else None,
        },
    )
    from tailorml.shift.report import render_stress_report

    render_stress_report(out)
    atomic_write_text(out / "DONE", "stress\n")
    return out


def _life_patients(cohort: Cohort, requested: Sequence[str]) -> list[str]:
    """The virtual patients to re-simulate: those asked for, else the cohort's own."""
    patients = list(requested) or [p for p in cohort.ids if life.is_virtual_patient(p)]
    unknown = [patient for patient in patients if not life.is_virtual_patient(patient)]
    if unknown:
        raise TailormlError(
            f"--life-patient {unknown[0]!r} is not a UVA/Padova virtual patient; use ids "
            "like adolescent-001, adult-010 or child-005"
        )
    if not patients:
        raise TailormlError(
            "--life re-simulates UVA/Padova virtual patients (ids like adult-001); this "
            "cohort has none: add --cohort synthetic, or name them with --life-patient"
        )
    return patients
