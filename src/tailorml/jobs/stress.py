"""`tailorml stress`: one or more saved models under realistic shifts of their test data.

Sensor faults run on the held-out test part of the default chronological split (the part the
train job reports), so "unshifted" is the figure the train run already shows. Life changes
(`--life`) re-simulate new days of the same virtual patients and compare with the same new
days unchanged. Every model meets the same faulted readings (seeded), so models compare
paired, per individual. Output: tidy CSV tables, metrics.json and report.html, written from
the result object (`StressResult`) that the CLI prints from. The folder is a run directory
of kind "stress" (config.toml: the cohort, the models' task and the `[stress]` settings;
run.json: the finished steps), which `tailorml report` goes by.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from tailorml.config import SplitConfig, StressConfig
from tailorml.data.cohort import Cohort, load_cohort
from tailorml.data.glucose import make_windows
from tailorml.data.prepared import Prepared, prepare_whole
from tailorml.data.splits import split_windows
from tailorml.errors import TailormlError
from tailorml.io import atomic_write_json, sha256_file
from tailorml.jobs.evaluate import applied_config, require_model_input
from tailorml.jobs.result import Reported, as_json
from tailorml.progress import SILENT, Reporter
from tailorml.runs import Run, kind_of
from tailorml.shift import life, suite
from tailorml.shift.sources import StressedModel
from tailorml.shift.summary import paired_drops, summarize_drops

OUT_IS_FILE = "--out {path} is a file; give a folder (it is created if missing)"
OUT_IS_RUN = "--out {path} is a {kind} run directory; give a new folder for the stress run"
KIND = "stress"


@dataclass
class StressResult(Reported):
    """A finished stress run: the tables it wrote (alert metrics per model, shift and
    individual; paired drops and their summary; the iCGM envelope; life scenarios when
    re-simulated) and metrics.json."""

    path: Path
    per_individual: pd.DataFrame
    drops: pd.DataFrame
    summary: pd.DataFrame
    envelope: pd.DataFrame
    life_scenarios: pd.DataFrame
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "run_dir": str(self.path),
            "metrics": self.metrics,
            "summary": as_json(self.summary.to_dict("records")),
        }

    def write(self) -> None:
        """The tables and metrics.json into `path` (the report reads only these)."""
        self.per_individual.to_csv(self.path / "per_individual.csv", index=False)
        self.drops.to_csv(self.path / "drops.csv", index=False)
        self.summary.to_csv(self.path / "summary.csv", index=False)
        self.envelope.to_csv(self.path / "icgm_envelope.csv", index=False)
        if not self.life_scenarios.empty:
            self.life_scenarios.to_csv(self.path / "life_scenarios.csv", index=False)
        atomic_write_json(self.path / "metrics.json", self.metrics)


def default_folder() -> Path:
    """runs/<YYYYmmdd-HHMMSS>-stress: where a stress run goes without --out."""
    return Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{KIND}"


def require_out_folder(out_dir: str | Path) -> Path:
    """The output folder, refused early (before models load) when it is a file or another
    job's run directory (its run.json and report would be overwritten)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TailormlError(OUT_IS_FILE.format(path=out))
    if (out / "run.json").is_file() and (found := kind_of(out)) != KIND:
        raise TailormlError(OUT_IS_RUN.format(path=out, kind=found))
    return out


def _prepare_split(cohort: Cohort, model: nn.Module) -> Prepared:
    windows = make_windows(cohort, model.policy.task())
    return Prepared(cohort, windows, split_windows(cohort, windows, SplitConfig()))


def run(
    sources: Sequence[StressedModel],
    cohort_path: str | Path | None,
    out_dir: str | Path,
    settings: StressConfig | None = None,
    reporter: Reporter = SILENT,
    individuals: Sequence[str] = (),
) -> StressResult:
    """Run the stress suite for every model (`shift.sources`) with `settings` (`[stress]`:
    seed, life changes); write the tables and report into `out_dir`. `individuals`
    restricts the cohort (and the life changes) to them."""
    settings = settings or StressConfig()
    seed, with_life, life_days = settings.seed, settings.life, settings.life_days
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
    patients = _life_patients(cohort, settings.life_patients or individuals) if with_life else []
    prepared = _prepare_split(cohort, models[0])
    out.mkdir(parents=True, exist_ok=True)  # only once the input is known to be good
    model_task = models[0].policy.task().model_dump(mode="json")
    recorded = applied_config(cohort_path, model_task, KIND, individuals, stress=settings)
    run_dir = Run.start(out, recorded, KIND)
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
    metrics = as_json(
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
    result = StressResult(out, per_individual, drops, summary, envelope, life_table, metrics)
    result.write()
    run_dir.mark_done(KIND)
    from tailorml.shift.report import render_stress_report

    render_stress_report(out)
    run_dir.mark_done("report")
    return result


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
