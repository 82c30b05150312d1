"""The `tailorml` command line. Thin: parse options, call the library, print with Rich."""

from __future__ import annotations

import json
import math
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from tailorml import __version__, cli_database, cli_service
from tailorml.errors import TailormlError

if TYPE_CHECKING:
    import pandas as pd

INTERRUPTED = "interrupted; finished work is kept (rerun to resume)"
INTERRUPTED_EARLY = (
    "interrupted before any step finished; the empty run directory {path} was removed "
    "(run the command again to start over)"
)
TERMINATED = "terminated (SIGTERM); finished work is kept (rerun to resume)"
TERMINATED_EARLY = (
    "terminated (SIGTERM) before any step finished; the empty run directory {path} was "
    "removed (run the command again to start over)"
)
UNEXPECTED = (
    "unexpected {kind}: {message} (a tailorml bug, or a file it could not read; finished "
    "work is kept; please report it with the traceback above)"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler, a container stop): handled like Ctrl-C, so the same
    cleanup runs (workers stopped, an empty run directory removed) instead of the process
    vanishing mid-step."""


_signals: list[int] = []  # SIGTERM seen: libraries (Ray) may re-raise it as a plain Ctrl-C


def _raise_terminated(signal_number: int, frame: object) -> None:
    _signals.append(signal_number)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
    raise Terminated()


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a command (Typer would turn it into a silent exit 130)."""


class UnexpectedError(Exception):
    """An exception Typer would misreport: EOFError means 'stdin closed' to it ("Aborted.")."""


class _Group(TyperGroup):
    """Hands Ctrl-C and EOFError raised by a command to `main()` instead of to Typer."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as error:
            raise Interrupted() from error
        except EOFError as error:
            raise UnexpectedError(error) from error


# rich_markup_mode=None on every Typer: help texts say '[default: robust.eps, 10]', which
# Rich would read as a markup tag and drop (the option's default vanished from --help).
app = typer.Typer(
    rich_markup_mode=None,
    cls=_Group,
    help="Personalize small deep-learning models for human-centric sensing, safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cohort_app = typer.Typer(
    rich_markup_mode=None, help="Simulate, inspect and validate cohort files.", no_args_is_help=True
)
config_app = typer.Typer(rich_markup_mode=None, help="Inspect configuration.", no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")
app.add_typer(config_app, name="config")
deploy_app = typer.Typer(
    rich_markup_mode=None,
    help="Put a model on a microcontroller: int8 C code, emulated parity and budgets.",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")
privacy_app = typer.Typer(
    rich_markup_mode=None,
    help="Encrypted inference: the server computes alerts on CKKS-encrypted windows.",
    no_args_is_help=True,
)
app.add_typer(privacy_app, name="privacy")

# Control characters a terminal acts on (ESC starts a sequence that can recolour, move the
# cursor, retitle the window or hide text; CR and BS overwrite), C1 controls, and the
# bidirectional overrides that reorder what is shown. Newlines and tabs of the CLI's own
# messages stay; `printable(..., lines=False)` escapes them too (a one-line value).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, lines: bool = True) -> str:
    """`text` with the control characters a terminal would act on written as escapes
    (`\\x1b`, `\\u202e`): ids, file names and cells echoed from an export or a request are
    shown, never run by the terminal."""
    pattern = _CONTROL if lines else _CONTROL_IN_LINE
    return pattern.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


class _PrintableConsole(Console):
    """A console whose text (`print`'s strings, table cells) has its control characters
    escaped (`printable`): output carries data read from exports and requests."""

    def render_str(self, text: str, **options) -> Text:  # type: ignore[override]
        return super().render_str(printable(text), **options)


# Never parse output as Rich markup: it carries data (ids, file names, reasons), and an id
# like "[/x]" crashed the command while "[methods.transfer]" vanished from a message. The
# CLI's own styles are explicit (`_styled`, style=...).
console = _PrintableConsole(markup=False)


def _styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain and (text, style) parts, none of it read as markup, control
    characters escaped (`printable`)."""
    return Text.assemble(
        *(printable(p) if isinstance(p, str) else (printable(p[0]), p[1]) for p in parts)
    )


def _mark(passed: bool, outcome: str | None = None) -> Text:
    """✓ / ✗, or a yellow ? for a gate whose data could not tell the models apart."""
    from tailorml.registry.models import NOT_INFORMATIVE

    if outcome == NOT_INFORMATIVE:
        return Text("?", style="yellow")
    return Text("✓", style="green") if passed else Text("✗", style="red")


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML file overriding the defaults (see `config show`)."),
]


COHORT_HELP = (
    "A shipped cohort — real (azt1d + t1d_uom + physiocgm: 51 adults, retrospective CGM), "
    "azt1d, t1d_uom, physiocgm, synthetic (30 simulated patients) — or a cohort file "
    "(.parquet/.csv)."
)
CohortOption = Annotated[str | None, typer.Option("--cohort", help=COHORT_HELP)]


def _with_cohort(overrides: dict, cohort: str | None) -> dict:
    """Config overrides plus `cohort.path` when --cohort was given (an empty one, e.g. an
    unset shell variable, is refused rather than read as "the default")."""
    if cohort is not None and not cohort.strip():
        raise TailormlError(
            "--cohort is empty; name a shipped cohort (real, azt1d, t1d_uom, physiocgm, "
            "synthetic) or a cohort file, or leave --cohort out for the default"
        )
    return overrides | {"cohort": {"path": cohort}} if cohort else overrides


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
    """tailorml: personalized glucose-alert models for type-1 diabetes, learned and judged
    on real people (three open CGM cohorts ship with it) and on a simulated virtual cohort."""


def _reporter():
    from tailorml.progress import RichReporter

    return RichReporter()


def _load(config_path: Path | None, overrides: dict | None = None):
    from tailorml.config import load_config

    return load_config(config_path, overrides)


def _print_summary(metrics: dict, report: Path) -> None:
    """A train/demo or evaluate result: per-individual metrics, then where the report is."""
    period = "test" if metrics["evaluated"]["part"] == "test" else "whole-period"
    table = Table(title=f"Per-individual {period} metrics (mean ± sd, min–max)")
    for column in ("metric", "mean", "sd", "min", "max"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, row in metrics["per_individual_summary"].items():
        cells = [
            "–" if row[key] is None else f"{row[key]:.3f}" for key in ("mean", "sd", "min", "max")
        ]
        table.add_row(name, *cells)
    console.print(table)
    if metrics.get("synthetic"):
        console.print("Synthetic cohort: these figures are not clinical evidence.", style="yellow")
    console.print(_styled("\nReport: ", (str(report.resolve()), "bold")))


@app.command()
def demo(
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created.")] = Path(
        "runs"
    ),
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run directory.")
    ] = None,
    cohort: CohortOption = None,
) -> None:
    """Train the global glucose-alert model on the shipped real cohorts (or --cohort), choose
    its alert threshold on validation days, evaluate every person on their later test days
    beside the rules that need no learning, and write runs/<time>-demo/ with report.html."""
    from tailorml.jobs import train

    if cohort is not None and resume is not None:
        raise TailormlError("--resume continues a run on its own cohort; drop --cohort")
    overrides = {"run": {"runs_dir": str(runs_dir), "name": "demo"}}
    config = _load(None, _with_cohort(overrides, cohort))
    result = train.run(config, _reporter(), resume=resume)
    _print_summary(result.metrics, result.report)


@app.command("train")
def train_command(
    config: ConfigOption = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run directory.")
    ] = None,
    cohort: CohortOption = None,
) -> None:
    """Train and evaluate the global model as configured (cohort, task, split, model);
    --cohort overrides the config's cohort."""
    from tailorml.jobs import train

    if (config is not None or cohort is not None) and resume is not None:
        raise TailormlError(
            "--resume continues a run with the config it started with; drop --config and "
            "--cohort, or start a new run without --resume"
        )

    settings = _load(config, _with_cohort({}, cohort))
    result = train.run(settings, _reporter(), resume=resume)
    _print_summary(result.metrics, result.report)


@app.command("evaluate")
def evaluate_command(
    model: Annotated[
        Path, typer.Option(help="A saved model: RUN/model.pt or a registry model file.")
    ],
    cohort: Annotated[
        str | None,
        typer.Option(help=COHORT_HELP + " Default: the real cohorts."),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where the run directory is created.")] = Path(
        "runs"
    ),
) -> None:
    """Apply a saved model, with its own alert policy, to every window of a cohort file (no
    training split): per-individual metrics, alert metrics and report.html."""
    from tailorml.jobs import evaluate

    result = evaluate.run(model, cohort, runs_dir, _reporter())
    _print_summary(result.metrics, result.report)


@app.command("stress")
def stress_command(
    model: Annotated[
        list[Path] | None,
        typer.Option(help="A saved model (RUN/model.pt or a registry model file); repeat it."),
    ] = None,
    individual: Annotated[
        str | None,
        typer.Option(
            help="Instead of --model: this person's newest personalization session from the "
            "registry (predefined model and every candidate at its own threshold), on their "
            "data only (default cohort: the one the session used)."
        ),
    ] = None,
    registry: RegistryOption = None,
    cohort: Annotated[
        str | None,
        typer.Option(
            help=COHORT_HELP + " Default: the real cohorts (--life re-simulates virtual "
            "patients: use --cohort synthetic)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default: runs/<time>-stress.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of every fault and life scenario [default: stress.seed, 0]."),
    ] = None,
    life: Annotated[
        bool | None,
        typer.Option(
            "--life/--no-life",
            help="Also re-simulate new days with life changes (slower; minutes) "
            "[default: stress.life, no].",
        ),
    ] = None,
    life_days: Annotated[
        int | None,
        typer.Option(min=1, max=28, help="Days per life scenario [default: stress.life_days, 3]."),
    ] = None,
    life_patient: Annotated[
        list[str] | None,
        typer.Option(help="Virtual patient for --life (e.g. adult-001); repeat; default all."),
    ] = None,
) -> None:
    """Models under realistic shifts of their test data (sensor faults; with --life, life
    changes): alert metrics per shift and individual against the unshifted figures, the
    robustness drop, the iCGM envelope; CSV tables and report.html."""
    from tailorml.jobs import stress
    from tailorml.shift.sources import from_files, from_session, session_cohort

    if model and individual:
        raise TailormlError("give --model FILE or --individual ID (with --registry), not both")
    target = stress.require_out_folder(out or stress.default_folder())
    if individual:
        where = registry or _load(None).soft.registry
        sources = from_session(where, individual)
        cohort = cohort or session_cohort(where, individual)
    else:
        sources = from_files(model or [])
    options = {"seed": seed, "life": life, "life_days": life_days, "life_patients": life_patient}
    overrides = {"stress": {k: v for k, v in options.items() if v is not None}}
    result = stress.run(
        sources,
        cohort,
        target,
        _load(None, overrides).stress,
        _reporter(),
        individuals=[individual] if individual else (),
    )
    console.print(_styled("Report: ", (str(result.report.resolve()), "bold")))


def _with_ci(row, name: str) -> str:
    """A mean with its interval, "–" without one (never "nan")."""
    value, low, high = (getattr(row, name + suffix) for suffix in ("", "_low", "_high"))
    if not math.isfinite(value):
        return "–"
    return f"{value:.2f} [{low:.2f}–{high:.2f}]"


@app.command("lodo")
def lodo_command(
    config: ConfigOption = None,
    cohort: CohortOption = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted lodo run directory.")
    ] = None,
) -> None:
    """Leave one dataset out: for each dataset of the cohort (default: the three real ones),
    train the predefined model on the others and judge it on the people it never saw — their
    first days set personal thresholds, the rest judge the model beside the rules without
    learning (CGM now, 30-min trend, Nightscout AR2); means with intervals over people, the
    worst decile, the goals; runs/<time>-lodo/report.html (docs/real_data.md)."""
    from tailorml.config import RunConfig
    from tailorml.jobs import lodo

    if (config is not None or cohort is not None) and resume is not None:
        raise TailormlError("--resume continues a run with its own config; drop --config/--cohort")
    settings = _load(config, _with_cohort({}, cohort))
    if settings.run.name == RunConfig().name:  # the default name; a config's own one wins
        settings = settings.model_copy(
            update={"run": settings.run.model_copy(update={"name": "lodo"})}
        )
    result = lodo.run(settings, _reporter(), resume=resume)
    table = Table(title="Left-out dataset: means over its people (95 % interval over people)")
    for column in (
        "left out",
        "rule",
        "early ≥15 min",
        "any lead",
        "false/day",
        "precision",
        "margin",
    ):
        table.add_column(column, justify="left" if column in ("left out", "rule") else "right")
    for row in result.summary.itertuples():
        margin = getattr(row, "margin", float("nan"))
        table.add_row(
            row.held_out,
            row.rule,
            _with_ci(row, "sensitivity_early"),
            _fmt(row.sensitivity),
            _with_ci(row, "false_alerts_per_day"),
            _fmt(row.alert_precision),
            "" if margin != margin else f"{100 * margin:+.0f} pts",
        )
    console.print(table)
    if result.synthetic:
        console.print("Synthetic cohort: these figures are not clinical evidence.", style="yellow")
    else:
        console.print(
            "Real people, retrospective data: evidence about models, not clinical evidence."
        )
    console.print(_styled("\nReport: ", (str((result.run_dir / "report.html").resolve()), "bold")))


@app.command()
def report(
    run: Annotated[
        Path, typer.Argument(help="A run directory under runs/, or an export or simulation.")
    ],
) -> None:
    """Re-render the report of a run (train/demo, evaluate, experiment, lodo, stress, a deploy
    export or simulation) from its stored tables."""
    from tailorml.jobs.report import render

    output = render(run)
    console.print(_styled("Report: ", (str(output.resolve()), "bold")))


def _finite_non_negative(value: float | None) -> float | None:
    """Option callback: a sensor error is a finite number of mg/dL (or %), at least 0."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"{value} is not a finite number >= 0 (e.g. 10)")
    return value


def _simulation_engine(value: str | None) -> str | None:
    if value is not None and value not in ("batched", "reference"):
        raise typer.BadParameter(f"{value!r} is not one of batched, reference")
    return value


def _bound_method(value: str | None) -> str | None:
    from tailorml.robust.certify import CERTIFY_METHODS

    if value is not None and value not in CERTIFY_METHODS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(CERTIFY_METHODS)}")
    return value


@app.command()
def certify(
    run: Annotated[Path, typer.Option("--run", help="A train/demo run directory.")],
    eps: Annotated[
        float | None,
        typer.Option(
            help="Sensor error: ±mg/dL on every CGM reading [default: robust.eps, 10].",
            callback=_finite_non_negative,
        ),
    ] = None,
    relative: Annotated[
        float | None,
        typer.Option(help="Plus ±p % of each reading [default: 0].", callback=_finite_non_negative),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="Bound: ibp, crown-ibp, crown, alpha-crown (~100x CROWN's cost) or bab "
            "(then branch and bound over the input box: seconds a window; use with "
            "--max-windows) [default: crown].",
            callback=_bound_method,
        ),
    ] = None,
    max_windows: Annotated[
        int | None,
        typer.Option(min=0, help="Test windows per individual, evenly spaced; 0 = all [300]."),
    ] = None,
    sweep_windows: Annotated[
        int | None,
        typer.Option(min=0, help="Test windows per individual for the ε sweep; 0 = all [50]."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Certify this model file (e.g. a personalized one) instead of the run's."
        ),
    ] = None,
) -> None:
    """Certify the run's alert model against CGM sensor error: verified (provable), PGD and
    clean accuracy per individual, and verified accuracy against ε; writes
    RUN/certify-eps<ε>/ with report.html. Resumable."""
    from tailorml.jobs import certify as certify_job
    from tailorml.runs import Run

    opened = Run.open(run)
    options = {
        "eps": eps,
        "relative_percent": relative,
        "method": method,
        "max_windows": max_windows,
        "sweep_windows": sweep_windows,
    }
    overrides = {"robust": {k: v for k, v in options.items() if v is not None}}
    config = _load(opened.file("config.toml"), overrides)
    result = certify_job.run(opened.path, config, model, _reporter())
    summary = result.summary
    table = Table(title=f"Alert decisions under ±{summary['eps']:g} mg/dL sensor error")
    for column in ("accuracy", "mean", "worst individual"):
        table.add_column(column, justify="left" if column == "accuracy" else "right")
    for key, value in summary["mean"].items():
        table.add_row(key.replace("_", " "), f"{value:.3f}", f"{summary['min'][key]:.3f}")
    console.print(table)
    if summary.get("synthetic"):
        console.print("Synthetic cohort: these figures are not clinical evidence.", style="yellow")
    console.print(_styled("\nReport: ", (str(result.report.resolve()), "bold")))


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
    from tailorml.jobs import experiment as experiment_job

    if config is None and resume is None:
        raise TailormlError("give an experiment config (e.g. experiments/table1.toml) or --resume")
    overrides: dict = {}
    if workers is not None:
        overrides["workers"] = workers
    if backend is not None:
        overrides["backend"] = backend
    settings = _load(config, {"experiment": overrides}) if config else None
    result = experiment_job.run(settings, _reporter(), resume=resume)
    _print_table_one(result.summary)
    console.print(_styled("\nReport: ", (str(result.report.resolve()), "bold")))


def _print_table_one(summary: pd.DataFrame) -> None:
    if summary.columns.empty:  # no row and no column: nobody was personalized
        console.print("no individual could be personalized; see report.html", style="red")
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
    from tailorml.experiment.report import flag_weak_tests

    _, weak = flag_weak_tests(summary)
    if weak:
        console.print(
            f"Too few individuals for the paired test: with {weak['pairs']} or fewer the "
            f"smallest possible p is {weak['smallest_p']:.3g}, so p says nothing here (needs "
            f"{weak['needed']}+).",
            style="yellow",
        )


def _p(value) -> str:
    return "–" if value is None or value != value else f"{value:.3g}"


RegistryOption = Annotated[
    Path | None,
    typer.Option("--registry", help="Registry directory (default: soft.registry, 'registry')."),
]


def _registry(registry: Path | None, config: Path | None = None):
    """The existing registry the review, models and rollback commands read and decide in."""
    from tailorml.registry.models import Registry

    return Registry.existing(registry or _load(config).soft.registry)


@app.command()
def personalize(
    individual: Annotated[str, typer.Option("--individual", "-i", help="e.g. child-004.")],
    config: ConfigOption = None,
    registry: RegistryOption = None,
    predefined: Annotated[
        Path | None,
        typer.Option(help="Register this train/demo run's model as the predefined model first."),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Who runs it (audit log).")] = None,
) -> None:
    """Soft personalization for one individual: build candidates, calibrate their alert
    thresholds, apply the safety gates and propose one candidate for review, or keep the
    predefined model. Everything is recorded in the registry; a model card is written."""
    from tailorml.jobs import personalize as personalize_job

    result = personalize_job.run(
        _load(config),
        individual,
        _reporter(),
        predefined_run=predefined,
        actor=actor,
        registry_dir=registry,
    )
    outcome, gates = result.outcome, result.gates
    if outcome.refused:
        console.print(
            _styled(("Personalization refused", "bold"), f" for {individual}: {outcome.refused}")
        )
    else:
        table = Table(
            title=f"Candidates for {individual} (held-out test part; gates in the card)",
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
            collapse_padding=True,
        )
        table.add_column("candidate", no_wrap=True)
        for column in ("thr.", "sens.", "FA/d"):
            table.add_column(column, justify="right", min_width=5, no_wrap=True)
        for column in [*(f"g{gate.number}" for gate in gates), "all"]:
            table.add_column(column, justify="center", no_wrap=True, min_width=3)
        for row in outcome.table:
            marks = [_mark(row[g.name], row.get(f"{g.name}_outcome")) for g in gates]
            table.add_row(
                _short(row["candidate"]),
                f"{row['threshold']:g}",
                _fmt(row["hypo_sensitivity"]),
                _fmt(row["false_alerts_per_day"]),
                *marks,
                _mark(row["passed"]),
            )
        console.print(table)
        legend = ", ".join(f"g{gate.number} {gate.short}" for gate in gates)
        console.print(f"{legend}; ? not informative (numbers in the model card)")
        if outcome.proposal:
            console.print(
                _styled(
                    "Proposed for review: candidate ",
                    (str(outcome.proposal_candidate_id), "bold"),
                    f" ({outcome.proposal}). Approve with: tailorml review approve "
                    f"{outcome.proposal_candidate_id} --reviewer NAME",
                )
            )
        else:
            console.print(
                _styled("No candidate passed every gate: ", ("keep the predefined model", "bold"))
            )
    console.print(_styled("Model card: ", (str(outcome.card.resolve()), "bold")))


def _short(name: str) -> str:
    """Shorter candidate names for an 80-column table."""
    for long, short in (
        (", frozen_layers=0", ""),
        ("alpha=", "α="),
        ("predefined + personal threshold", "predefined+threshold"),
    ):
        name = name.replace(long, short)
    return name


def _fmt(value) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"


review_app = typer.Typer(
    rich_markup_mode=None,
    help="Review proposed candidates: list, show, approve, reject, rollout.",
    no_args_is_help=True,
)
models_app = typer.Typer(
    rich_markup_mode=None,
    help="Which model is active for an individual, and why.",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")
app.add_typer(models_app, name="models")


@review_app.command("list")
def review_list(
    registry: RegistryOption = None,
    individual: Annotated[str | None, typer.Option(help="Only this individual.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every candidate, not only pending.")] = False,
) -> None:
    """Candidates waiting for review (or all of them with --all)."""
    found = _registry(registry).candidates(individual or None, pending_only=not all_)
    table = Table(title="Candidates" if all_ else "Pending review")
    for column in ("id", "individual", "session", "candidate", "threshold", "status"):
        table.add_column(column)
    for row in found:
        table.add_row(
            str(row.id),
            row.individual,
            str(row.session_id),
            row.name,
            f"{row.threshold:g}",
            row.status,
        )
    console.print(table if found else "Nothing to review.")


@review_app.command("show")
def review_show(
    candidate: Annotated[int, typer.Argument(help="Candidate id (see review list).")],
    registry: RegistryOption = None,
) -> None:
    """A candidate's metrics and every gate with its numbers; refreshes the model card."""
    from tailorml.soft.card import render_card

    store = _registry(registry)
    found = store.candidate(candidate)
    console.print(
        _styled(
            (f"Candidate {found.id}", "bold"),
            f": {found.name} for {found.individual} (session {found.session_id}, status "
            f"{found.status}, threshold {found.threshold:g})",
        )
    )
    console.print(
        ", ".join(f"{k} {_fmt(v) if isinstance(v, float) else v}" for k, v in found.metrics.items())
    )
    gates = Table(title="Gates")
    for column in ("gate", "result", "why"):
        gates.add_column(column)
    for gate in found.gates:
        gates.add_row(
            gate.gate,
            Text(gate.outcome, style={"pass": "green", "fail": "red"}.get(gate.outcome, "yellow")),
            gate.reason,
        )
    console.print(gates)
    if store.retired(found.individual):
        # the person's data was erased: no card is drawn again from what is left of it
        console.print(
            f"{found.individual}'s models were retired (their data was erased); no model card "
            "is drawn for this candidate."
        )
        return
    card = render_card(store, found.session_id)
    console.print(_styled("Model card: ", (str(card.resolve()), "bold")))


def _decide(
    candidate: int, decision: str, reviewer: str, role: str, comment: str, registry: Path | None
) -> None:
    from tailorml.soft.card import render_card

    store = _registry(registry)
    decided = store.decide(candidate, decision, reviewer, role, comment)
    card = render_card(store, decided.session_id)
    verb = "approved: now the active model" if decision == "approve" else "rejected"
    console.print(f"Candidate {candidate} ({decided.name}) for {decided.individual} {verb}.")
    console.print(_styled("Model card: ", (str(card.resolve()), "bold")))


Reviewer = Annotated[str, typer.Option(help="Who decides (recorded).")]
Role = Annotated[str, typer.Option(help="expert or user.")]
Comment = Annotated[str, typer.Option(help="Why (recorded).")]


@review_app.command("approve")
def review_approve(
    candidate: Annotated[int, typer.Argument(help="Candidate id.")],
    reviewer: Reviewer,
    role: Role = "expert",
    comment: Comment = "",
    registry: RegistryOption = None,
) -> None:
    """Approve a proposed candidate: it becomes the individual's active model."""
    _decide(candidate, "approve", reviewer, role, comment, registry)


@review_app.command("reject")
def review_reject(
    candidate: Annotated[int, typer.Argument(help="Candidate id.")],
    reviewer: Reviewer,
    role: Role = "expert",
    comment: Comment = "",
    registry: RegistryOption = None,
) -> None:
    """Reject a proposed candidate: the active model does not change."""
    _decide(candidate, "reject", reviewer, role, comment, registry)


@review_app.command("rollout")
def review_rollout(
    registry: RegistryOption = None,
    cohort: Annotated[
        Path | None,
        typer.Option(help="Cohort file naming each individual's group (default: shipped)."),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(help="How far a group's worst-case hypo sensitivity may fall (0-1)."),
    ] = 0.0,
    approve: Annotated[
        bool,
        typer.Option(
            "--approve", help="Approve the proposals of every group that passes (needs --reviewer)."
        ),
    ] = False,
    reviewer: Annotated[
        str, typer.Option(help="Who approves the roll-out (recorded); with --approve.")
    ] = "",
    comment: Comment = "",
) -> None:
    """Population fairness check of the pending proposals: per group, the worst-case held-out
    hypo sensitivity with the predefined model vs the proposals. A group whose worst case
    falls is held back; with --approve the other groups' proposals are approved."""
    from tailorml.data.cohort import load_cohort
    from tailorml.soft.rollout import apply_rollout, check_rollout, pending_rollout

    if not 0.0 <= tolerance <= 1.0:
        raise TailormlError(f"--tolerance {tolerance}: give a sensitivity difference in [0, 1]")
    if approve and not reviewer.strip():
        raise TailormlError("--approve needs --reviewer NAME (recorded with every approval)")
    store = _registry(registry)
    groups = {i.id: i.group for i in load_cohort(cohort).individuals}
    table = pending_rollout(store, groups)
    if table.empty:
        console.print("Nothing to roll out: no proposal awaits review.")
        return
    check = check_rollout(table, tolerance=tolerance)
    shown = Table(title=f"Roll-out check of {len(table)} pending proposal(s)")
    for column in ("group", "proposals", "worst before", "worst after", "mean before"):
        shown.add_column(column, justify="right" if column != "group" else "left")
    shown.add_column("mean after", justify="right")
    shown.add_column("decision")
    for row in check.groups.itertuples(index=False):
        shown.add_row(
            row.group,
            str(row.individuals),
            _fmt(row.worst_before),
            _fmt(row.worst_after),
            _fmt(row.mean_before),
            _fmt(row.mean_after),
            Text("held back", style="red") if row.held_back else Text("passes", style="green"),
        )
    console.print(shown)
    for row in check.groups[check.groups["held_back"]].itertuples(index=False):
        members = sorted(table.loc[table["group"] == row.group, "individual"])
        console.print(
            f"Held back: group {row.group} (worst-case hypo sensitivity "
            f"{_fmt(row.worst_before)} -> {_fmt(row.worst_after)}): {', '.join(members)} keep "
            "their current model.",
            style="red",
        )
    unknown = sorted(table.loc[table["group"] == "unknown", "individual"])
    if unknown:
        console.print(f"Not in the cohort (group 'unknown'): {', '.join(unknown)}", style="yellow")
    if not approve:
        console.print("Nothing decided: add --approve --reviewer NAME to approve what passes.")
        return
    approved, held = apply_rollout(store, table, check, reviewer, comment)
    console.print(f"Approved {len(approved)} proposal(s): {approved or 'none'}.")
    if held:
        console.print(
            f"Held back {len(held)} proposal(s): {held} (recorded in the audit log; they stay "
            "pending for a reviewer to decide one by one)."
        )


@models_app.command("active")
def models_active(
    individual: Annotated[str, typer.Argument(help="e.g. child-004.")],
    registry: RegistryOption = None,
) -> None:
    """The individual's active model and why it is active."""
    store = _registry(registry)
    active = store.active_model(individual)
    if not store.knows(individual):
        console.print(
            f"{individual!r} has never been personalized in {store.root} (check the id); "
            "like anyone new, they would use the predefined model:",
            style="yellow",
        )
    threshold = "default" if active.threshold is None else f"{active.threshold:g}"
    console.print(
        _styled(
            f"{individual}: ",
            (active.kind, "bold"),
            f" model {active.model.id} (sha256 {active.model.sha256[:12]}), alert threshold "
            f"{threshold}",
        )
    )
    console.print(f"why: {active.reason}" + (f" ({active.created})" if active.created else ""))


@models_app.command("history")
def models_history(
    individual: Annotated[str, typer.Argument(help="e.g. child-004.")],
    registry: RegistryOption = None,
) -> None:
    """Every change of the individual's active model, and the audit log."""
    store = _registry(registry)
    table = Table(title=f"Active-model history of {individual}")
    for column in ("when", "model", "candidate", "threshold", "by", "reason"):
        table.add_column(column)
    for change in store.history(individual):
        table.add_row(
            change.created,
            str(change.model_id),
            str(change.candidate_id or "-"),
            f"{change.threshold:g}",
            change.actor,
            change.reason,
        )
    console.print(table)
    audit = Table(title="Audit log")
    for column in ("when", "actor", "action", "details"):
        audit.add_column(column)
    for entry in store.audit(individual):
        details = json.dumps(entry.details, sort_keys=True, default=str)
        audit.add_row(entry.created, entry.actor, entry.action, details)
    console.print(audit)


@app.command()
def rollback(
    individual: Annotated[str, typer.Argument(help="e.g. child-004.")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    actor: Annotated[str | None, typer.Option(help="Who (recorded).")] = None,
    registry: RegistryOption = None,
    config: ConfigOption = None,
) -> None:
    """Return an individual to the predefined model at its own alert threshold (recorded;
    history is kept)."""
    store = _registry(registry, config)
    store.rollback(individual, reason, actor)
    console.print(f"{individual} now uses the predefined model again.")


def _target_name(value: str | None) -> str | None:
    from tailorml.deploy.target.mcu import profile

    if value is not None:
        profile(value)  # an unknown target is a one-line error naming the known ones
        return value.lower()  # as deploy.target spells it
    return value


TargetOption = Annotated[
    str | None,
    typer.Option(
        help="Target profile: stm32f401 (= cortex-m4) or stm32l151 (= cortex-m3) "
        "[default: deploy.target, cortex-m4].",
        callback=_target_name,
    ),
]


def _deploy_config(run: Path, options: dict, command: dict | None = None):
    """The run's config with the command's `[deploy]` options over it (None: the config's)."""
    from tailorml.runs import Run

    opened = Run.open(run)
    deploy = {k: v for k, v in options.items() if v is not None}
    for name, section in (command or {}).items():
        deploy[name] = {k: v for k, v in section.items() if v is not None}
    return opened.path, _load(opened.file("config.toml"), {"deploy": deploy})


def _print_footer(synthetic: bool, report: Path) -> None:
    """The synthetic-data warning (when it applies) and where the report is."""
    if synthetic:
        console.print("Synthetic cohort: these figures are not clinical evidence.", style="yellow")
    console.print(_styled("\nReport: ", (str(report.resolve()), "bold")))


def _print_deploy(result) -> None:
    """An export (`jobs.deploy_export.DeployExportResult`): its ladder and budgets."""
    summary = result.summary
    ladder = Table(title="Parity ladder")
    for column in ("rung", "windows", "same decision", "logits"):
        ladder.add_column(column, justify="left" if column in ("rung", "logits") else "right")
    for rung in summary["parity"]:
        identical = rung["identical_logits"]
        logits = "quantized" if identical is None else ("bit for bit" if identical else "DIFFER")
        ladder.add_row(
            rung["name"], str(rung["windows"]), f"{100 * rung['decision_agreement']:.2f} %", logits
        )
    console.print(ladder)
    table = Table(title="Budgets (latency by the conservative cycle model; 1.25 CPI beside it)")
    for column in ("target", "flash", "RAM", "stack", "latency", "at 1.25 CPI", "result"):
        table.add_column(column, justify="left" if column in ("target", "result") else "right")
    for name, budget in summary["budgets"].items():
        failed = [check for check, ok in budget["checks"].items() if not ok]
        table.add_row(
            name,
            f"{budget['flash'] / 1024:.1f} kB",
            f"{budget['ram'] / 1024:.1f} kB",
            f"{budget['peak_stack']} B",
            f"{budget['latency_conservative_ms']:.2f} ms"
            if "latency_conservative_ms" in budget
            else "-",
            f"{budget['latency_ms']:.2f} ms",
            _styled(
                ("✓ within budget", "green") if not failed else ("✗ " + ", ".join(failed), "red")
            ),
        )
    console.print(table)
    _print_footer(result.synthetic, result.report)


@deploy_app.command("export")
def deploy_export(
    run: Annotated[Path, typer.Option("--run", help="A train/demo run directory.")],
    target: TargetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Export directory [default: RUN/deploy-<target>]."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Export this model file (e.g. a personalized one) instead of the run's."),
    ] = None,
    calibration_windows: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="General training windows the int8 activations are calibrated on "
            "[default: deploy.calibration_windows, 4096].",
        ),
    ] = None,
    emulate: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Individuals whose every test window also runs in the emulated target "
            "[default: deploy.export.emulate, 3].",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace another model's export in --out.")
    ] = False,
) -> None:
    """Quantize the run's alert model to int8, generate its C code, prove on the test windows
    that float, int8 reference, host C and the emulated microcontroller agree, and measure
    the target's flash, RAM, stack and latency. Writes OUT/ with tailorml_model.{h,c},
    deploy.json and deploy.html. Options not given come from the run's [deploy] section."""
    from tailorml.jobs import deploy_export

    options = {"target": target, "calibration_windows": calibration_windows}
    path, config = _deploy_config(run, options, {"export": {"emulate": emulate}})
    _print_deploy(deploy_export.run(path, config, out, model, force, _reporter()))


@deploy_app.command("report")
def deploy_report(
    out: Annotated[Path, typer.Argument(help="An export directory (from `deploy export`).")],
    target: Annotated[
        list[str] | None,
        typer.Option(help="Target profile(s) to measure [default: every profile]."),
    ] = None,
) -> None:
    """Budgets of an exported model on each target profile: flash, static RAM, peak stack
    (measured in the emulator), instructions and estimated latency, pass/fail; updates
    deploy.json and deploy.html."""
    from tailorml.jobs import deploy_export
    from tailorml.jobs.report import damaged_text_named

    for name in target or []:
        _target_name(name)
    with damaged_text_named(out):  # a tampered deploy.json: one line, not a traceback
        result = deploy_export.report(out, target or None, _reporter())
    _print_deploy(result)


def _print_simulate(result) -> None:
    """A simulation (`jobs.deploy_simulate.SimulateResult`): the test part, the updates, the
    learner's memory and cost."""
    summary = result.summary
    labels = {"device": "device (learns on the device)", "predefined": "predefined (int8)"}
    labels["cloud"] = "cloud-personalized (TL)"
    test = summary["summary"]["test"]
    if test:
        table = Table(title=f"{summary['individual']}: alerts on the test part")
        for column in ("model", "lows", "early sensitivity", "false alerts/day"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for name in ("device", "predefined", "cloud"):
            if name not in test["models"]:
                continue
            metrics = test["models"][name]
            early, false = metrics["hypo_sensitivity_early"], metrics["false_alerts_per_day"]
            table.add_row(
                labels[name],
                str(int(metrics["hypo_events"])),
                "–" if early is None else f"{early:.2f}",  # None: no low to catch (JSON null)
                "–" if false is None else f"{false:.2f}",
            )
        console.print(table)
    else:
        console.print("The lived days do not reach the test part (pass more --days).")
    updates = summary["updates"]
    tally: dict[str, int] = {}
    for update in updates:
        tally[update["gate_name"]] = tally.get(update["gate_name"], 0) + 1
    console.print(
        f"{len(updates)} nightly updates: "
        + ", ".join(
            f"{count} {'accepted' if gate == 'accepted' else f'refused by {gate}'}"
            if gate != "data"
            else f"{count} without enough data"
            for gate, count in tally.items()
        )
    )
    memory, cost = summary["memory"], summary["cost"]
    line = (
        f"Learner state {memory['state_bytes']} B of a {memory['budget_bytes']} B budget; "
        f"update {cost['host_update_ms']['max']:.1f} ms on this machine"
    )
    if cost["emulated"]:
        emulated = cost["emulated"]
        line += (
            f", {emulated['update_instructions_max']} instructions on the emulated "
            f"{emulated['target']} (≈ {emulated['update_ms_at_clock']:.0f} ms)"
        )
    console.print(line + ".")
    _print_footer(result.synthetic, result.report)


@deploy_app.command("simulate")
def deploy_simulate(
    run: Annotated[Path, typer.Option("--run", help="A train/demo run directory.")],
    individual: Annotated[str, typer.Option(help="Whose data the device lives through.")],
    target: TargetOption = None,
    days: Annotated[
        int | None,
        typer.Option(
            min=1, help="Live only the first N days [default: deploy.simulate.days, all]."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output directory [default: RUN/simulate-<target>-<individual>]."),
    ] = None,
    emulate: Annotated[
        bool | None,
        typer.Option(
            "--emulate/--no-emulate",
            help="Also live through the data on the emulated target (slower; counts the "
            "instructions of every update) [default: deploy.simulate.emulate, no].",
            show_default=False,
        ),
    ] = None,
    cloud_iterations: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Iterations of the cloud model's transfer learning (0: no cloud model) "
            "[default: deploy.simulate.cloud_iterations, 300].",
        ),
    ] = None,
) -> None:
    """Let a device with guarded on-device learning live through one person's data: predict
    every 5 minutes, label its own windows 30 minutes later, try an update through its gates
    every night. Compares its alerts day by day with the predefined model and a
    cloud-personalized one; writes OUT/simulate.json and simulate.html. Options not given
    come from the run's [deploy] section."""
    from tailorml.jobs import deploy_simulate

    simulate = {"days": days, "emulate": emulate, "cloud_iterations": cloud_iterations}
    path, config = _deploy_config(run, {"target": target}, {"simulate": simulate})
    _print_simulate(deploy_simulate.run(path, individual, config, out, reporter=_reporter()))


@privacy_app.command("check")
def privacy_check(
    run: Annotated[Path, typer.Option("--run", help="A train run of an he_friendly model.")],
    model: Annotated[
        Path | None, typer.Option(help="Check this model file instead of the run's model.pt.")
    ] = None,
    individuals: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Individuals whose test windows make the round trip "
            "[default: privacy.individuals, 3].",
        ),
    ] = None,
    max_windows: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Test windows per individual, evenly spaced (0 = all) "
            "[default: privacy.max_windows, 0].",
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Windows per ciphertext (1 = one request per window) [default: privacy.batch, 1].",
        ),
    ] = None,
) -> None:
    """Encrypt test windows with a fresh client key, evaluate them encrypted as the server
    would (public context only), decrypt, and compare with the plaintext model: logit
    differences, decisions, latency per window and sizes. Writes RUN/privacy_check.json
    (RUN/privacy_check_<model sha256[:12]>.json for a --model whose bytes differ from the run's)."""
    from tailorml.jobs import privacy_check as check_job
    from tailorml.runs import Run

    opened = Run.open(run)
    options = {"individuals": individuals, "max_windows": max_windows, "batch": batch}
    overrides = {"privacy": {k: v for k, v in options.items() if v is not None}}
    config = _load(opened.file("config.toml"), overrides)
    result = check_job.run(opened.path, model, config, _reporter())
    _print_privacy_check(result.figures)
    if result.save_error:
        console.print(result.save_error, style="bold red")
        raise typer.Exit(2)
    console.print(f"Saved: {result.saved_to}")
    if not result.passed:
        console.print(
            "Encrypted and plaintext results disagree beyond the tolerance: do not serve this "
            "model encrypted.",
            style="bold red",
        )
        raise typer.Exit(1)


def _print_privacy_check(result: dict) -> None:
    batch = result["batch"]
    packing = "one window per ciphertext" if batch == 1 else f"up to {batch} windows per ciphertext"
    table = Table(title=f"Encrypted vs plaintext model, {packing}")
    for column in ("individual", "windows", "max |Δ logit|", "decisions differ", "alerts"):
        table.add_column(column, justify="left" if column == "individual" else "right")
    for row in result["individuals"]:
        table.add_row(
            row["individual"],
            str(row["windows"]),
            f"{row['max_logit_difference']:.1e}",
            str(row["decisions_differ"]),
            str(row["alerts_plain"]),
        )
    console.print(table)
    per_window, sizes = result["seconds_per_window"], result["sizes"]
    console.print(
        f"Per window: encrypt {per_window['encrypt'] * 1e3:.0f} ms, evaluate "
        f"{per_window['evaluate'] * 1e3:.0f} ms, decrypt {per_window['decrypt'] * 1e3:.0f} ms, "
        f"end to end {per_window['end_to_end'] * 1e3:.0f} ms (median). Sizes: public context "
        f"{sizes['public_context_bytes'] / 1e6:.1f} MB (once), ciphertext up "
        f"{sizes['upload_bytes'] / 1e3:.0f} kB, logits down {sizes['download_bytes'] / 1e3:.0f} kB."
    )
    verdict = (
        "every decision agrees"
        if result["decisions_differ"] == 0
        else f"{result['decisions_differ']} decisions differ"
    )
    console.print(
        f"{result['windows']} windows, {verdict}; logits within "
        f"{result['max_logit_difference']:.1e} (tolerance {result['logit_tolerance']:g})."
    )
    if result.get("synthetic"):
        console.print("Synthetic cohort: these figures are not clinical evidence.", style="yellow")


@cohort_app.command("simulate")
def cohort_simulate(
    out: Annotated[
        Path,
        typer.Option(help="Output cohort file, .parquet or .csv (metadata JSON beside it)."),
    ] = Path("data/virtual_t1d_cohort.parquet"),
    config: ConfigOption = None,
    days: Annotated[int | None, typer.Option(min=1, help="Days per patient (default 14).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the scenario.")] = None,
    patient: Annotated[
        list[str] | None,
        typer.Option(help="Only this patient (repeatable), e.g. child-001. Default: all 30."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel processes (reference engine).")] = 2,
    force: Annotated[
        bool, typer.Option(help="Simulate again even if finished parts exist.")
    ] = False,
    engine: Annotated[
        str | None,
        typer.Option(
            help="batched (all patients as one vectorized ODE, fast) or reference (simglucose's"
            " own patient, one at a time; made the shipped cohort) [default: simulation.engine,"
            " batched].",
            callback=_simulation_engine,
        ),
    ] = None,
) -> None:
    """Simulate the synthetic virtual T1D cohort (30 UVA/Padova patients, simglucose's model).

    Resumable: finished patients are kept and skipped when the command is run again."""
    from tailorml.data.simulate import check_out_path, resolve_patients, simulate_cohort

    check_out_path(out)  # before the progress bar

    overrides: dict = {}
    if days is not None:
        overrides["days"] = days
    if seed is not None:
        overrides["seed"] = seed
    if patient:
        overrides["patients"] = list(patient)
    if engine is not None:
        overrides["engine"] = engine
    settings = _load(config, {"simulation": overrides}).simulation
    try:
        names = resolve_patients(settings.patients)
    except ValueError as error:
        raise TailormlError(str(error)) from None
    reporter = _reporter()
    with reporter.task(
        f"simulating {len(names)} patients x {settings.days} days ({settings.engine} engine)",
        len(names) * settings.days,  # patient-days
    ) as task:

        def done(name: str, reused: bool) -> None:
            if reused:
                task.describe(f"simulating (reused finished {name})")

        path = simulate_cohort(
            settings,
            out,
            workers=workers,
            on_patient_done=done,
            force=force,
            on_progress=task.advance,
        )
    console.print(
        _styled(
            "Synthetic cohort written to ",
            (str(path), "bold"),
            f" (+ {path.with_suffix('.json').name})",
        )
    )


DESCRIBE_COLUMNS = {  # column: (short header, format) so the table fits 80 columns
    "patient_id": ("patient", "{}"),
    "days": ("days", "{:.1f}"),
    "data_sufficiency": ("data%", "{:.0%}"),
    "mean_mgdl": ("mean", "{:.0f}"),
    "gmi_percent": ("GMI%", "{:.1f}"),
    "cv": ("CV%", "{:.1%}"),
    "time_below_54": ("<54", "{:.1%}"),
    "time_below_70": ("<70", "{:.1%}"),
    "time_in_range": ("TIR", "{:.0%}"),
    "time_above_180": (">180", "{:.0%}"),
    "time_above_250": (">250", "{:.1%}"),
    "hypo_events": ("hypo", "{}"),
    "hyper_events": ("hyper", "{}"),
}


def _describe_cell(row: pd.Series, column: str, style: str) -> str:
    """One cell of `cohort describe`: "–" where there is no value (never nan), and a "!"
    where the value misses its consensus target (too few days or readings included)."""
    from tailorml.data.glycemia import meets_target

    value = row[column]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = style.format(value).removesuffix("%")  # the header says %
    return text + "!" if meets_target(column, value) is False else text


GLYCEMIA_LEGEND = (
    "Consensus CGM metrics (Battelino 2019): days and data (% of readings present), ! under "
    "14 days or 70 %; mean glucose (mg/dL); GMI (%); CV = SD/mean (! above 36 %); % of "
    "readings <54, <70, 70-180 (TIR), >180, >250 mg/dL (! misses its target: <1, <4, >70, "
    "<25, <5 %); – no reading."
)


PEOPLE_COLUMNS = {  # column: (header, format) of the people table, where a cohort has it
    "patient_id": ("patient", "{}"),
    "dataset": ("dataset", "{}"),
    "group": ("age band", "{}"),
    "age_years": ("age", "{:.0f}"),
    "sex": ("sex", "{}"),
    "hba1c_percent": ("HbA1c%", "{:.1f}"),
    "sensor": ("sensor", "{}"),
}


def _print_people(table: pd.DataFrame) -> None:
    """The people table (who the individuals are), for cohorts that say it (the real ones)."""
    import pandas as pd

    columns = [c for c in PEOPLE_COLUMNS if c in table]
    if not {"dataset", "sex", "sensor"} & set(columns):
        return
    view = Table(title="People", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for column in columns:
        view.add_column(PEOPLE_COLUMNS[column][0], justify="left")
    for _, row in table.iterrows():
        view.add_row(
            *("–" if pd.isna(row[c]) else PEOPLE_COLUMNS[c][1].format(row[c]) for c in columns)
        )
    console.print(view)


@cohort_app.command("describe")
def cohort_describe(
    path: Annotated[
        str | None,
        typer.Argument(help=COHORT_HELP + " Default: the config's cohort (the real cohorts)."),
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Also write the table to this CSV.")] = None,
    force: Annotated[bool, typer.Option(help="Replace --csv if it exists.")] = False,
    config: ConfigOption = None,
) -> None:
    """Per-patient summary: time in range, time below 70 / above 250 (consensus ranges), hypo
    and hyper events as the configured task defines them, missing data. Also validates the
    file against the schema."""
    from tailorml.data.cohort import load_cohort
    from tailorml.data.describe import describe_cohort
    from tailorml.io import atomic_write_text
    from tailorml.policy import AlertPolicy

    if csv is not None and csv.suffix.lower() != ".csv":  # it writes CSV text, nothing else
        raise TailormlError(f"--csv {csv} must end in .csv (the table is written as CSV)")
    settings = _load(config, _with_cohort({}, path))
    cohort = load_cohort(
        settings.cohort.path or None,
        settings.cohort.individuals or None,
        settings.cohort.max_days,
    )
    if csv is not None and csv.resolve() == Path(cohort.source).resolve():
        raise TailormlError(f"--csv {csv} would overwrite the cohort file; choose another name")
    if csv is not None and csv.exists() and not force:
        raise TailormlError(f"--csv {csv} exists; pass --force to replace it, or choose another")
    policy = AlertPolicy.from_config(settings, cohort.sample_minutes)
    table = describe_cohort(cohort, policy)
    view = Table(
        title=f"{cohort.sample_minutes}-min readings; hypo/hyper = events "
        f"of >= {policy.event_min_minutes} min below {policy.hypo_mgdl:g} / above "
        f"{policy.hyper_mgdl:g} mg/dL (all columns: --csv)",
        box=box.SIMPLE_HEAD,
        padding=0,  # the box draws a space between columns
        show_edge=False,
    )
    console.print(_styled((cohort.source, "bold")), soft_wrap=True)
    for column, (header, _) in DESCRIBE_COLUMNS.items():
        text = column in ("patient_id", "group")
        width = int(table[column].astype(str).str.len().max()) if text else None
        view.add_column(header, justify="left" if text else "right", min_width=width)
    for _, row in table.iterrows():
        view.add_row(
            *(_describe_cell(row, column, style) for column, (_, style) in DESCRIBE_COLUMNS.items())
        )
    console.print(view)
    console.print(GLYCEMIA_LEGEND)
    _print_people(table)
    if cohort.synthetic:
        console.print("Synthetic (simulated) cohort, not clinical data.", style="yellow")
    for name, source in cohort.metadata.get("datasets", {}).items():
        console.print(
            f"{name}: {source['authors']}, {source['title']}, doi:{source['doi']} "
            f"({source['licence']})",
            soft_wrap=True,
        )
    if cohort.metadata.get("retrospective"):
        console.print(
            "Real people, retrospective CGM data: evidence about models, not clinical "
            "evidence. Attribution and changes: tailorml/data/real/ATTRIBUTION.md."
        )
    if any(cohort.notes.values()):
        console.print(f"Loading notes: {cohort.notes}")
    if csv:
        atomic_write_text(csv, table.to_csv(index=False))
        console.print(f"Written to {csv}")


@cohort_app.command("import")
def cohort_import(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Exports (.gz too): Clarity/LibreView/t:connect CSV, Nightscout JSON, ..."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Cohort file (.parquet or .csv).")],
    force: Annotated[
        bool, typer.Option(help="Replace --out if it exists (else an existing file is kept).")
    ] = False,
    format: Annotated[
        str,
        typer.Option(
            help="auto, dexcom, libreview, nightscout, ohio, tconnect or csv (auto: by content)."
        ),
    ] = "auto",
    grid_minutes: Annotated[
        int | None,
        typer.Option(min=1, help="Grid interval [default: 5; 15 when all files are LibreView]."),
    ] = None,
    person: Annotated[
        str | None,
        typer.Option("--id", help="All files are this one person (else: per file or id column)."),
    ] = None,
    keep_ids: Annotated[
        bool, typer.Option(help="Keep ids as given instead of salted hashes (never names).")
    ] = False,
    salt: Annotated[
        str | None,
        typer.Option(
            envvar="TAILORML_IMPORT_SALT",
            help="Salt for pseudonymous ids; the same salt gives the same ids [default: random].",
        ),
    ] = None,
    out_of_range: Annotated[
        str, typer.Option(help="Low/High codes: limits (40/400 mg/dL, counted) or missing.")
    ] = "limits",
    libre_scans: Annotated[
        str, typer.Option(help="LibreView scans: ignore, or fill grid slots history left empty.")
    ] = "ignore",
    timezone: Annotated[
        str | None,
        typer.Option(help="Nightscout records without utcOffset: IANA zone, e.g. Europe/Berlin."),
    ] = None,
    time_column: Annotated[str, typer.Option(help="Generic CSV: time column.")] = "time",
    glucose_column: Annotated[str, typer.Option(help="Generic CSV: glucose column.")] = "cgm",
    id_column: Annotated[
        str | None, typer.Option(help="Generic CSV: person id column (several people).")
    ] = None,
    units: Annotated[str, typer.Option(help="Generic CSV: glucose units, mgdl or mmol.")] = "mgdl",
    dayfirst: Annotated[
        bool | None,
        typer.Option(
            "--dayfirst/--monthfirst",
            help="Generic CSV and LibreView: read 05/01/2024 as 5 January (--dayfirst) or "
            "May 1 (--monthfirst); required when the dates read both ways and their order "
            "does not tell.",
        ),
    ] = None,
    carbs_column: Annotated[str | None, typer.Option(help="Generic CSV: carbs (g).")] = None,
    insulin_column: Annotated[str | None, typer.Option(help="Generic CSV: insulin (U).")] = None,
) -> None:
    """Import CGM exports (Dexcom Clarity, LibreView, Nightscout, OhioT1DM, Tandem t:connect,
    any CSV) into a
    cohort file on a regular grid, without inventing readings; ids pseudonymised, names and
    birth dates dropped; writes OUT and OUT.json (formats, counts, choices). See
    docs/importers.md."""
    from tailorml.data.importers import import_cohort

    csv_options = {
        "time_column": time_column,
        "glucose_column": glucose_column,
        "id_column": id_column,
        "units": units,
        "dayfirst": dayfirst,
        "carbs_column": carbs_column,
        "insulin_column": insulin_column,
    }
    result = import_cohort(
        files,
        out,
        format=format,
        grid_minutes=grid_minutes,
        person_id=person,
        keep_ids=keep_ids,
        salt=salt,
        force=force,
        out_of_range=out_of_range,
        libre_scans=libre_scans,
        timezone=timezone,
        csv_options=csv_options,
    )
    meta = result.metadata
    console.print(
        _styled(
            f"Imported {len(meta['files'])} file(s) ({', '.join(meta['formats'])}) -> ",
            (str(out), "bold"),
            f" (+ {out.with_suffix('.json').name}): {len(meta['patients'])} person(s), "
            f"{meta['sample_minutes']}-min grid",
        )
    )
    for patient, count in meta["readings_per_patient"].items():  # --keep-ids: as in the export
        console.print(f"  {printable(patient, lines=False)}: {count} readings")
    if result.notes:
        console.print(f"Counts: {result.notes}")
    if not salt and not keep_ids:
        console.print(
            "Ids were hashed with a fresh random salt (not stored); pass --salt (or "
            "TAILORML_IMPORT_SALT) to get the same ids on a later import.",
            style="yellow",
        )


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the resolved configuration (defaults, overridden by --config) as TOML."""
    from tailorml.config import to_toml

    print(to_toml(_load(config)), end="")


app.add_typer(cli_service.users_app, name="users")
app.add_typer(cli_database.database_app, name="database")
app.command("serve")(cli_service.serve)
app.command("worker")(cli_service.worker)
app.command("keygen")(cli_service.keygen)


def main() -> None:
    """Entry point: user errors become one red message and exit code 2, not a traceback.

    Ctrl-C prints INTERRUPTED (or, when the only run it made had nothing finished and was
    removed, INTERRUPTED_EARLY) and exits 130; SIGTERM does the same with TERMINATED and
    exits 143 (128 + 15, as a shell reports it); any other exception prints its traceback
    and one red line naming its type (never a bare "Aborted.") and exits 1. In every
    failure, a run directory this command created that holds no finished work is removed."""
    from tailorml.runs import discard_unfinished

    errors = _PrintableConsole(stderr=True, soft_wrap=True, markup=False, highlight=False)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        app()
    except TailormlError as error:
        discard_unfinished()
        errors.print(_styled(("error:", "bold red"), f" {error}"))
        sys.exit(2)
    except (KeyboardInterrupt, Interrupted):
        terminated = signal.SIGTERM in _signals
        removed = discard_unfinished()
        early, late = (
            (TERMINATED_EARLY, TERMINATED) if terminated else (INTERRUPTED_EARLY, INTERRUPTED)
        )
        errors.print(early.format(path=removed[0]) if removed else late)
        sys.exit(143 if terminated else 130)
    except Exception as error:
        discard_unfinished()
        cause = error.__cause__ if isinstance(error, UnexpectedError) else error
        traceback.print_exception(cause)
        message = UNEXPECTED.format(kind=type(cause).__name__, message=cause)
        errors.print(_styled(("error:", "bold red"), f" {message}"))
        sys.exit(1)
