"""The `tailorml` command line. Thin: parse options, call the library, print with Rich."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tailorml import __version__
from tailorml.errors import TailormlError

app = typer.Typer(
    help="Personalize small deep-learning models for human-centric sensing, safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cohort_app = typer.Typer(help="Simulate, inspect and validate cohort files.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")
app.add_typer(config_app, name="config")

console = Console()
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML file overriding the defaults (see `config show`)."),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"tailorml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """tailorml: personalized glucose-alert models on a synthetic virtual T1D cohort."""


def _reporter():
    from tailorml.progress import RichReporter

    return RichReporter()


def _load(config_path: Path | None, overrides: dict | None = None):
    from tailorml.config import load_config

    return load_config(config_path, overrides)


def _print_summary(run_path: Path) -> None:
    metrics = json.loads((run_path / "metrics.json").read_text())
    table = Table(title="Per-individual test metrics (mean ± sd, min–max)")
    for column in ("metric", "mean", "sd", "min", "max"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, row in metrics["per_individual_summary"].items():
        cells = [
            "–" if row[key] is None else f"{row[key]:.3f}" for key in ("mean", "sd", "min", "max")
        ]
        table.add_row(name, *cells)
    console.print(table)
    if metrics.get("synthetic"):
        console.print("[yellow]Synthetic cohort: these figures are not clinical evidence.[/yellow]")


@app.command()
def demo(
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created.")] = Path(
        "runs"
    ),
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run directory.")
    ] = None,
) -> None:
    """Train the global glucose-alert model on the shipped synthetic cohort, evaluate every
    individual and write runs/<time>-demo/ with report.html."""
    from tailorml.pipeline import run_global

    config = _load(None, {"run": {"runs_dir": str(runs_dir), "name": "demo"}})
    run = run_global(config, _reporter(), resume=str(resume) if resume else None)
    _print_summary(run.path)
    console.print(f"\nReport: [bold]{(run.path / 'report.html').resolve()}[/bold]")


@app.command("train")
def train_command(
    config: ConfigOption = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run directory.")
    ] = None,
) -> None:
    """Train and evaluate the global model as configured (cohort, task, split, model)."""
    from tailorml.pipeline import run_global

    run = run_global(_load(config), _reporter(), resume=str(resume) if resume else None)
    _print_summary(run.path)
    console.print(f"\nReport: [bold]{(run.path / 'report.html').resolve()}[/bold]")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="A run directory under runs/.")]) -> None:
    """Re-render report.html of a run (train/demo or experiment) from its stored tables."""
    from tailorml.runs import Run

    path = Run.open(run).path
    if (path / "results.parquet").exists():
        from tailorml.experiment.report import render_experiment_report

        output = render_experiment_report(path)
    else:
        from tailorml.evaluate.report import render_report

        output = render_report(path)
    console.print(f"Report: [bold]{output.resolve()}[/bold]")


@app.command()
def experiment(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment TOML, e.g. experiments/table1.toml.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted experiment run directory.")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Parallel workers.")] = None,
    backend: Annotated[
        str | None, typer.Option(help="Where tasks run: local (processes) or ray.")
    ] = None,
) -> None:
    """Personalization methods x settings x seeds over all individuals (Table I of
    "Personalization of Deep Learning"). Resumable; writes results, summary and report."""
    from tailorml.experiment.runner import run_experiment

    if config is None and resume is None:
        raise TailormlError("give an experiment config (e.g. experiments/table1.toml) or --resume")
    overrides: dict = {}
    if workers is not None:
        overrides["workers"] = workers
    if backend is not None:
        overrides["backend"] = backend
    settings = _load(config, {"experiment": overrides}) if config else None
    run = run_experiment(settings, _reporter(), resume=str(resume) if resume else None)
    _print_table_one(run.path)
    console.print(f"\nReport: [bold]{(run.path / 'report.html').resolve()}[/bold]")


def _print_table_one(run_path: Path) -> None:
    import pandas as pd

    try:
        summary = pd.read_csv(run_path / "summary.csv")
    except pd.errors.EmptyDataError:
        console.print("[red]no individual could be personalized; see report.html[/red]")
        return
    table = Table(title="Table I (mean over individuals; p: Wilcoxon vs reference)")
    for column in ("method", "acc D_I", "rank", "p", "acc D_G", "rank ", "p "):
        table.add_column(column, justify="left" if column == "method" else "right")
    for _, row in summary.iterrows():
        table.add_row(
            row["setting"],
            f"{row['acc_individual_mean']:.3f}",
            str(row["acc_individual_rank"]),
            _p(row.get("acc_individual_p")),
            f"{row['acc_general_mean']:.3f}",
            str(row["acc_general_rank"]),
            _p(row.get("acc_general_p")),
        )
    console.print(table)


def _p(value) -> str:
    return "–" if value is None or value != value else f"{value:.3g}"


@cohort_app.command("simulate")
def cohort_simulate(
    out: Annotated[
        Path, typer.Option(help="Output Parquet file (metadata JSON beside it).")
    ] = Path("data/virtual_t1d_cohort.parquet"),
    config: ConfigOption = None,
    days: Annotated[int | None, typer.Option(help="Days per patient (default 14).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the scenario.")] = None,
    patient: Annotated[
        list[str] | None,
        typer.Option(help="Only this patient (repeatable), e.g. child-001. Default: all 30."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel processes.")] = 2,
    force: Annotated[
        bool, typer.Option(help="Simulate again even if finished parts exist.")
    ] = False,
) -> None:
    """Simulate the synthetic virtual T1D cohort (30 UVA/Padova patients) with simglucose.

    Resumable: finished patients are kept and skipped when the command is run again."""
    from tailorml.data.simulate import resolve_patients, simulate_cohort

    overrides: dict = {}
    if days is not None:
        overrides["days"] = days
    if seed is not None:
        overrides["seed"] = seed
    if patient:
        overrides["patients"] = list(patient)
    settings = _load(config, {"simulation": overrides}).simulation
    try:
        names = resolve_patients(settings.patients)
    except ValueError as error:
        raise TailormlError(str(error)) from None
    reporter = _reporter()
    with reporter.task(
        f"simulating {len(names)} patients x {settings.days} days", len(names)
    ) as task:

        def done(name: str, reused: bool) -> None:
            task.advance()
            if reused:
                task.describe(f"simulating (reused finished {name})")

        path = simulate_cohort(settings, out, workers=workers, on_patient_done=done, force=force)
    console.print(
        f"Synthetic cohort written to [bold]{path}[/bold] (+ {path.with_suffix('.json').name})"
    )


DESCRIBE_COLUMNS = {  # column: (short header, format) so the table fits 80 columns
    "patient_id": ("patient", "{}"),
    "group": ("group", "{}"),
    "days": ("days", "{:.1f}"),
    "missing": ("miss", "{:.1%}"),
    "time_in_range": ("TIR", "{:.0%}"),
    "time_below_70": ("<70", "{:.1%}"),
    "time_above_250": (">250", "{:.1%}"),
    "hypo_events": ("hypo", "{}"),
    "hyper_events": ("hyper", "{}"),
}


@cohort_app.command("describe")
def cohort_describe(
    path: Annotated[
        Path | None, typer.Argument(help="Cohort file (.parquet/.csv); default: shipped cohort.")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Also write the table to this CSV.")] = None,
) -> None:
    """Per-patient summary: time in range, time below 70 / above 250, hypo and hyper events,
    missing data. Also validates the file against the schema."""
    from tailorml.data.cohort import load_cohort
    from tailorml.data.describe import describe_cohort
    from tailorml.io import atomic_write_text

    cohort = load_cohort(path)
    table = describe_cohort(cohort)
    view = Table(
        title=f"{cohort.source}\n{cohort.sample_minutes}-min readings; hypo/hyper = events "
        "of >= 15 min (all columns: --csv)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        show_edge=False,
    )
    for column, (header, _) in DESCRIBE_COLUMNS.items():
        text = column in ("patient_id", "group")
        width = int(table[column].astype(str).str.len().max()) if text else None
        view.add_column(header, justify="left" if text else "right", min_width=width)
    for _, row in table.iterrows():
        view.add_row(
            *(style.format(row[column]) for column, (_, style) in DESCRIBE_COLUMNS.items())
        )
    console.print(view)
    if cohort.synthetic:
        console.print("[yellow]Synthetic (simulated) cohort, not clinical data.[/yellow]")
    if any(cohort.notes.values()):
        console.print(f"Loading notes: {cohort.notes}")
    if csv:
        atomic_write_text(csv, table.to_csv(index=False))
        console.print(f"Written to {csv}")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the resolved configuration (defaults, overridden by --config) as TOML."""
    from tailorml.config import to_toml

    print(to_toml(_load(config)), end="")


def main() -> None:
    """Entry point: user errors become one red message and exit code 2, not a traceback."""
    try:
        app()
    except TailormlError as error:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {error}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted; finished work is kept (rerun to resume)")
        sys.exit(130)
