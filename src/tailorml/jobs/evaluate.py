"""`tailorml evaluate`: apply a saved model — predefined or personalized, with its own alert
policy — to any cohort file, on all of its data (no training split). This is how a user
checks a model on their own patients: the same per-individual metrics, alert metrics and
report as the train job.

The model decides how the data are read: its grid, window, horizon and input channels come
from the policy in the model file, and a cohort on another grid is refused (never
resampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel

from tailorml.config import AlertConfig, Config, config_from_dict, threshold_grid
from tailorml.data.cohort import Cohort, load_cohort
from tailorml.data.on_board import DERIVED_CHANNELS
from tailorml.data.prepared import prepare_whole
from tailorml.errors import CohortError
from tailorml.evaluate.individuals import data_summary, write_evaluation
from tailorml.evaluate.report import render_report
from tailorml.evaluate.rules import summary_by_group
from tailorml.io import atomic_write_json, atomic_write_text, sha256_file
from tailorml.jobs.result import MetricsResult, as_json
from tailorml.models.cnn import count_parameters, load_model
from tailorml.progress import SILENT, Reporter
from tailorml.runs import Run


def require_model_input(model, cohort: Cohort, model_path: Path) -> None:
    """The cohort has the model's channels and is on its grid (never resampled); shared by
    every command that applies a saved model to a file (`evaluate`, `stress`)."""
    policy = model.policy
    needed = [DERIVED_CHANNELS.get(channel, channel) for channel in policy.channels]
    missing = [column for column in needed if column not in cohort.readings]
    if missing:
        raise CohortError(
            f"{cohort.source}: the model {model_path} reads {', '.join(policy.channels)} but "
            f"the file has no {', '.join(missing)} column; use a file with them or a CGM-only "
            "model"
        )
    policy.require_same_input(
        replace(policy, sample_minutes=cohort.sample_minutes), str(model_path), cohort.source
    )


KIND = "evaluate"


def run(
    model_path: str | Path,
    cohort_path: str | Path | None,
    runs_dir: str | Path = "runs",
    reporter: Reporter = SILENT,
) -> MetricsResult:
    """Evaluate the model at `model_path` on every window of the cohort file (None: the
    shipped synthetic cohort); write tables, metrics.json and report.html into a new run
    of kind "evaluate". The config it records is the cohort and the model's own task."""
    model_path = Path(model_path)
    model = load_model(model_path)
    policy = model.policy
    cohort = load_cohort(cohort_path)
    require_model_input(model, cohort, model_path)
    prepared = prepare_whole(cohort, policy.task())
    run = Run.create(
        applied_config(cohort_path, policy.task().model_dump(mode="json"), KIND), KIND, runs_dir
    )
    reporter.log(f"run directory: {run.path}")
    if cohort.synthetic:
        reporter.log(
            "cohort is SYNTHETIC (simulated); figures are not clinical evidence", style="yellow"
        )
    windows = prepared.windows
    reporter.log(
        f"{len(cohort.individuals)} individuals, {len(windows)} windows on the "
        f"{cohort.sample_minutes}-minute grid; model {model_path} (threshold {policy.threshold:g})"
    )
    with reporter.task("evaluating individuals", total=1) as task:
        evaluation = write_evaluation(run.path, model, prepared, "all")
        budget = AlertConfig().max_false_alerts_per_day  # where baseline levels are chosen
        table = summary_by_group(
            model, prepared, cohort.category("dataset"), budget, threshold_grid(), None, "all"
        )
        atomic_write_text(run.file("alert_rules.csv"), table.to_csv(index=False))
        task.advance()
    metrics = {
        **data_summary(prepared),
        "model": {
            "file": str(model_path.resolve()),
            "sha256": sha256_file(model_path),
            "parameters": count_parameters(model),
        },
        **evaluation,
    }
    metrics = as_json(metrics)
    atomic_write_json(run.file("metrics.json"), metrics)
    run.mark_done("evaluate")
    render_report(run.path)
    run.mark_done("report")
    return MetricsResult(run, metrics)


def applied_config(
    cohort_path: str | Path | None,
    task: dict,
    kind: str,
    individuals: Sequence[str] = (),
    **sections: BaseModel,
) -> Config:
    """What the run directory of a job that applies saved models records: the cohort (and
    the individuals chosen), the models' task and the job's own `sections` (`stress=`)."""
    cohort: dict = {"path": str(cohort_path)} if cohort_path else {}
    if individuals:
        cohort["individuals"] = list(individuals)
    own = {name: section.model_dump(mode="json") for name, section in sections.items()}
    return config_from_dict({"cohort": cohort, "task": task, "run": {"name": kind}, **own})
