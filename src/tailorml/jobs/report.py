"""`tailorml report`: re-render a run's report from its stored tables, by the kind of job
that made it (`runs.kind_of`: run.json's kind, a stress folder's marker, or the summary a
deploy export or simulation wrote)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tailorml.errors import TailormlError
from tailorml.runs import kind_of

# The summaries a report is drawn from are small; a larger .json beside them is not read.
SUMMARY_BYTES = 64 * 1024 * 1024


@contextmanager
def damaged_text_named(path: Path) -> Iterator[None]:
    """A report drawn again from a folder's stored files fails on files that no longer
    hold what tailorml wrote (a hand edit, a damaged copy); that failure becomes one line
    naming the file (or the folder's files) instead of a traceback. A summary (`*.json`)
    with text no UTF-8 file can hold (a lone UTF-16 surrogate such as "\\ud800") is
    named; a summary whose fields changed type (`"parity": "x"`, `"model_sha256": null`)
    or a table that is no longer Parquet names the folder's stored files and the error."""
    from jinja2.exceptions import UndefinedError

    try:
        yield
    except UnicodeEncodeError:
        damaged = _surrogate_summary(Path(path))
        if damaged is None:
            raise
        raise TailormlError(
            f"{damaged}: holds text that is not valid Unicode (a lone surrogate such as "
            "\\ud800); it was edited or damaged: restore it from a copy or make the run "
            "again"
        ) from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, UndefinedError) as error:
        stored = sorted(p.name for p in Path(path).glob("*") if p.suffix in (".json", ".parquet"))
        shown = ", ".join(stored[:6]) + (" …" if len(stored) > 6 else "")
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        raise TailormlError(
            f"{path}: its stored files ({shown or 'none'}) do not hold what tailorml wrote "
            f"({detail}); they were edited or damaged: restore them from a copy or make the "
            "run or export again"
        ) from None


def _surrogate_summary(path: Path) -> Path | None:
    """The first summary of the folder whose JSON holds a lone surrogate, if any."""
    for summary in sorted(path.glob("*.json")) if path.is_dir() else ():
        try:
            if not summary.is_file() or summary.stat().st_size > SUMMARY_BYTES:
                continue
            json.dumps(json.loads(summary.read_bytes()), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return summary
        except (OSError, ValueError, RecursionError):
            continue
    return None


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
    with damaged_text_named(path):
        return RENDERERS.get(kind_of(path), _train)(path)
