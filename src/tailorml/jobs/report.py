"""`tailorml report`: re-render a run's report from its stored tables, by the kind of job
that made it (`runs.kind_of`: run.json's kind, a stress folder's marker, or the summary a
deploy export or simulation wrote)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tailorml.runs import kind_of


def _train(path: Path) -> Path:
    from tailorml.evaluate.report import render_report

    return render_report(path)


def _experiment(path: Path) -> Path:
    from tailorml.experiment.report import render_experiment_report

    return render_experiment_report(path)


def _lodo(path: Path) -> Path:
    from tailorml.jobs.lodo_report import render as render_lodo

    return render_lodo(path)


def _stress(path: Path) -> Path:
    from tailorml.shift.report import render_stress_report

    return render_stress_report(path)


def _deploy_export(path: Path) -> Path:
    from tailorml.jobs.deploy_export import rerender

    return rerender(path)


def _deploy_simulate(path: Path) -> Path:
    from tailorml.jobs.deploy_simulate import rerender

    return rerender(path)


# kind -> renderer; train and evaluate runs share one report (metrics.json and its tables)
RENDERERS: dict[str | None, Callable[[Path], Path]] = {
    "train": _train,
    "evaluate": _train,
    "experiment": _experiment,
    "lodo": _lodo,
    "stress": _stress,
    "deploy_export": _deploy_export,
    "deploy_simulate": _deploy_simulate,
}


def render(path: str | Path) -> Path:
    """The report of the run at `path` (report.html; deploy.html, simulate.html), written
    again; returns its path. A run whose kind
    is not known here gets the train/evaluate report (it reads metrics.json, and names what
    is missing)."""
    path = Path(path)
    return RENDERERS.get(kind_of(path), _train)(path)
