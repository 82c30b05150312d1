"""`tailorml personalize`: one person's soft-personalization session, as a job.

The session's steps (predefined model, candidates, calibrated thresholds, the safety gates,
the proposal, the registry records and the model card) are `soft.session.
personalize_individual`; this module is the command's door and its result object, which
the CLI prints: the candidates' table with one column per configured gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tailorml.config import Config
from tailorml.jobs.result import as_json
from tailorml.models.train import use_threads
from tailorml.progress import SILENT, Reporter
from tailorml.soft.gates import GATES, Gate
from tailorml.soft.session import Outcome, personalize_individual


@dataclass
class PersonalizeResult:
    """The session's outcome (refusal or candidates, proposal, card) and the gates it was
    judged by, in the configured order (the columns of its table)."""

    outcome: Outcome
    gates: list[type[Gate]]

    def to_json(self) -> dict[str, Any]:
        gates = [gate.name for gate in self.gates]
        return as_json({"kind": "personalize", **asdict(self.outcome), "gates": gates})


def run(
    config: Config, individual: str, reporter: Reporter = SILENT, **options: Any
) -> PersonalizeResult:
    """Personalize `individual` as configured (`[soft]`); everything is recorded in the
    registry and a model card is written. `options` are personalize_individual's:
    predefined_run, actor, registry_dir (default soft.registry)."""
    use_threads(config.train.threads)  # the job's, not the library's, to set
    outcome = personalize_individual(config, individual, reporter, **options)
    return PersonalizeResult(outcome, [GATES[name] for name in config.soft.gates])
