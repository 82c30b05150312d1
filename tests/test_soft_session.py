"""Soft personalization end to end on a few synthetic patients (small training budgets)."""

import copy
import sqlite3
from contextlib import closing

import numpy as np
import pytest
from typer.testing import CliRunner

from tailorml.cli import app
from tailorml.config import config_from_dict
from tailorml.data.glucose import HYPO, IN_RANGE
from tailorml.errors import ConfigError
from tailorml.personalize import execute, make_strategy
from tailorml.personalize.base import Context
from tailorml.personalize.dataset import from_glucose
from tailorml.registry.models import Registry
from tailorml.soft.gates import build_gates
from tailorml.soft.session import (
    Candidate,
    SoftSettings,
    gather_evidence,
    personalize_individual,
)

runner = CliRunner()
PATIENTS = ["adolescent-003", "adult-008", "child-004", "child-005"]


def settings(registry, **cohort):
    return config_from_dict(
        {
            "cohort": {"path": "synthetic", "individuals": PATIENTS, **cohort},
            "train": {"epochs": 2},
            # a 2-epoch model is too weak to stay alarming on every dangerous trace at a
            # quiet operating point; these tests are about the gates, not the threshold
            "alerts": {"operating_point": "fixed"},
            "experiment": {"general_stride": 10},
            "soft": {"registry": str(registry), "candidates": {"transfer": {"n": [30]}}},
        }
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    registry = tmp_path_factory.mktemp("soft") / "registry"
    config = settings(registry)
    outcome = personalize_individual(config, "child-004")
    return config, Registry(registry), outcome


def test_a_session_registers_every_candidate_with_its_gates_and_a_card(session):
    config, registry, outcome = session
    assert outcome.refused is None
    names = [row["candidate"] for row in outcome.table]
    assert names == ["predefined", "predefined + personal threshold", "TL(n=30, frozen_layers=0)"]
    rows = registry.session(outcome.session_id).candidates
    assert len(rows) == 3
    for row in rows:
        assert [g.gate for g in row.gates] == config.soft.gates
    # the predefined model and the threshold candidate share the predefined model file
    assert rows[0].model_id == rows[1].model_id == registry.predefined().id
    with closing(sqlite3.connect(registry.path)) as connection:  # not in the typed API
        predefined = connection.execute("SELECT * FROM models WHERE kind = 'predefined'")
        assert len(predefined.fetchall()) == 1
    html = outcome.card.read_text()
    assert "Model card: child-004" in html and "Synthetic data." in html
    # the card's alert plot can tell true from false alerts: labels are stored beside them
    import pandas as pd

    key = registry.session(outcome.session_id).summary["artifacts"]
    stored = pd.read_parquet(registry.root / "artifacts" / key / "predictions.parquet")
    assert {"label_is_hypo", "current_cgm", "p_hypo::predefined"} <= set(stored.columns)
    assert stored["label_is_hypo"].any() and not stored["label_is_hypo"].all()
    assert "data:image/png;base64," in html
    # lead time is on the card next to sensitivity (gate 2 judges both)
    assert "alerted ≥ 15 min ahead" in html
    for row in rows:
        (robust,) = [g for g in row.gates if g.gate == "certified_robustness"]
        numbers = robust.numbers
        if numbers["candidate_verified"] == numbers["predefined_verified"] == 0:
            assert robust.outcome == "not informative" and robust.passed
            assert "not informative" in html
    if outcome.proposal is None:
        assert "Keep the predefined model" in html
    else:
        assert registry.candidate(outcome.proposal_candidate_id).status == "pending_review"


def test_a_model_that_learned_hypoglycaemia_as_normal_is_rejected(session):
    config, registry, _ = session
    data = from_glucose(config, config.experiment.general_stride)
    predefined = registry.predefined()
    from tailorml.models.cnn import load_model

    base = load_model(predefined.path)
    harmful_data = copy.copy(data)
    harmful_data.y = data.y.copy()
    own = data.individual_train["child-004"]
    relabel = own[data.y[own] == HYPO]
    assert len(relabel) > 50
    harmful_data.y[relabel] = IN_RANGE  # the harmful state looks "normal" in D_I
    from tailorml.personalize.factory import StrategyTraining, budget

    context = Context(
        harmful_data,
        "child-004",
        0,
        budget(StrategyTraining.from_config(config), harmful_data, "child-004"),
        new_model=None,
        global_model=lambda: base,
        latents=None,
    )
    harmful = execute(make_strategy("transfer", n=300).plan(context), context)

    found = {}
    for name, model in (("predefined", base), ("harmful", harmful)):
        found[name], _ = gather_evidence(
            SoftSettings.from_config(config),
            data,
            "child-004",
            Candidate(name, model, name != "predefined", False),
        )
    gates = {gate.name: gate for gate in build_gates(config.soft)}
    harmful_states = gates["harmful_states"].check(found["harmful"], found["predefined"])
    safety = gates["safety_non_inferiority"].check(found["harmful"], found["predefined"])
    own = gates["harmful_states"].check(found["predefined"], found["predefined"])
    # the 2-epoch predefined model may miss a trace or two; the harmful one misses more
    assert harmful_states.numbers["alerted"] < own.numbers["alerted"]
    assert not harmful_states.passed
    assert not (harmful_states.passed and safety.passed)


def test_two_days_of_personal_data_are_refused_and_the_predefined_model_stays(session):
    _config, registry, _ = session
    short = settings(registry.root, max_days=3.5)  # the training part is about 2 days
    outcome = personalize_individual(short, "child-005")
    assert outcome.refused and "days of data, need 7" in outcome.refused
    row = registry.session(outcome.session_id)
    assert row.refused_reason == outcome.refused and len(row.candidates) == 0
    assert registry.active_model("child-005").kind == "predefined"
    assert "Personalization refused" in outcome.card.read_text()


def test_review_and_model_commands(session):
    _config, registry, outcome = session
    root = str(registry.root)
    listing = runner.invoke(app, ["review", "list", "--all", "--registry", root])
    assert listing.exit_code == 0 and "child-004" in listing.output
    candidate_id = registry.session(outcome.session_id).candidates[2].id
    shown = runner.invoke(app, ["review", "show", str(candidate_id), "--registry", root])
    assert shown.exit_code == 0 and "safety_non_inferiority" in shown.output
    active = runner.invoke(app, ["models", "active", "child-004", "--registry", root])
    assert active.exit_code == 0 and "predefined" in active.output
    back = runner.invoke(
        app, ["rollback", "child-004", "--reason", "test", "--actor", "qa", "--registry", root]
    )
    assert back.exit_code == 0
    history = runner.invoke(app, ["models", "history", "child-004", "--registry", root])
    assert "rollback: test" in history.output
    entries = [e.details for e in registry.audit("child-004")]
    assert entries[-1] == {"reason": "test"}


def test_review_show_draws_no_card_for_a_person_whose_data_was_erased(session, monkeypatch):
    from tailorml.registry.models import Registry

    _config, registry, outcome = session
    candidate_id = registry.session(outcome.session_id).candidates[0].id
    card = outcome.card
    before = card.stat().st_mtime_ns
    monkeypatch.setattr(Registry, "retired", lambda self, individual: [7])  # as after erasure
    shown = runner.invoke(
        app, ["review", "show", str(candidate_id), "--registry", str(registry.root)]
    )
    assert shown.exit_code == 0 and "no model card is drawn" in shown.output
    assert card.stat().st_mtime_ns == before  # not written again


def test_approving_a_candidate_that_failed_its_gates_is_refused(session, tailorml_in_process):
    _, registry, _outcome = session
    failed = [
        c
        for c in registry.candidates(pending_only=False)
        if c.status in ("failed_gates", "not_selected")
    ]
    assert failed
    result = tailorml_in_process(  # cli.main: exit code and stderr, without a subprocess
        "review", "approve", str(failed[0].id), "--reviewer", "someone", "--registry", registry.root
    )
    assert result.returncode == 2 and "not pending review" in result.stderr
    assert np.all([r.status != "approved" for r in registry.candidates(pending_only=False)])


def test_a_candidate_that_cannot_use_the_models_inputs_fails_before_any_work(tmp_path):
    # multi-modal co-teaching needs an insulin/carb view; the default model reads only cgm
    config = settings(tmp_path / "registry")
    config.soft.candidates = {"coteaching_mm": {"n": [30]}}
    with pytest.raises(ConfigError, match=r"soft\.candidates\.coteaching_mm.*task\.channels"):
        personalize_individual(config, "child-004")
    assert not (tmp_path / "registry").exists()  # nothing trained, nothing registered
