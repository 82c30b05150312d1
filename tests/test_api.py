"""The public face: the notebook of docs/python_api.md on the tiny config, and an
`import tailorml` that loads no torch."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tailorml
from tailorml.data.glucose import HYPO

PERSON = "adult-008"


TINY = Path(__file__).parents[1] / "experiments" / "tiny.toml"


@pytest.fixture(scope="module")
def notebook():
    """The notebook of docs/python_api.md, line for line, on experiments/tiny.toml."""
    torch.set_num_threads(1)

    import tailorml as tm

    config = tm.load_config(TINY)
    prepared = tm.prepare(config)
    training = tm.GlobalTraining.from_config(config, prepared.windows.sample_minutes)
    fit = tm.fit_global_model(prepared, training)
    evaluation = tm.evaluate_model(fit.model, prepared)
    outcome = tm.personalize_one(config, prepared, fit.model, PERSON, "transfer", n=20)
    return config, prepared, fit, evaluation, outcome


def test_the_evaluation_is_per_individual_and_decided_by_the_models_policy(notebook):
    _, prepared, fit, evaluation, _ = notebook
    per_individual, predictions, readings = evaluation  # still unpacks as a 3-tuple
    ids = prepared.cohort.ids
    assert list(per_individual["patient_id"]) == ids
    assert set(ids) == {"adolescent-003", "adult-008", "child-004"}
    test = prepared.splits.pooled("test")
    assert len(predictions) == len(test)
    assert list(per_individual["windows"]) == [len(prepared.splits.of(i, "test")) for i in ids]
    # by hand: hypo at the model's own (validation-chosen) threshold, else the likelier other
    threshold = fit.model.policy.threshold
    p = predictions[["p_in_range", "p_hypo", "p_hyper"]].to_numpy()
    by_hand = np.where(p[:, HYPO] >= threshold, HYPO, np.where(p[:, 0] >= p[:, 2], 0, 2))
    assert np.array_equal(predictions["y_pred"].to_numpy(), by_hand)
    mine = predictions[predictions["patient_id"] == PERSON]
    row = per_individual.set_index("patient_id").loc[PERSON]
    assert row["accuracy"] == pytest.approx((mine["y_true"] == mine["y_pred"]).mean())
    assert evaluation.pooled["accuracy"] == pytest.approx(
        (predictions["y_true"] == predictions["y_pred"]).mean()
    )
    assert {"hypo_sensitivity", "false_alerts_per_day", "balanced_accuracy"} <= set(per_individual)
    assert set(readings["patient_id"]) == set(ids) and readings["cgm"].notna().any()


def test_personalizing_one_person_fine_tunes_a_copy_and_reports_before_and_after(notebook):
    _, _, fit, evaluation, outcome = notebook
    assert outcome.individual == PERSON
    assert outcome.method == "TL(n=20, frozen_layers=0)"
    assert outcome.train_steps == 20
    # transfer starts from the predefined model: the same policy, other weights; the
    # predefined model itself is left as it was
    assert outcome.model.policy == fit.model.policy
    assert outcome.model is not fit.model
    before, after = fit.model.state_dict(), outcome.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # "before" is the predefined model on the person's test windows, the figures the
    # evaluation gave (both doors decide by the model's own policy)
    row = evaluation.per_individual.set_index("patient_id").loc[PERSON]
    assert outcome.before["acc_individual"] == pytest.approx(row["accuracy"])
    assert outcome.before["false_alerts_per_day"] == pytest.approx(row["false_alerts_per_day"])
    assert outcome.change("acc_individual") == pytest.approx(
        outcome.after["acc_individual"] - row["accuracy"]
    )
    assert {"acc_general", "balanced_acc_individual", "hypo_sensitivity"} <= set(outcome.after)


def test_a_plan_without_steps_keeps_the_predefined_model_and_its_figures(notebook):
    config, prepared, fit, _, _ = notebook
    kept = tailorml.personalize_one(config, prepared, fit.model, PERSON, "by_need", target=0.01)
    assert kept.train_steps == 0
    assert kept.after == pytest.approx(kept.before, nan_ok=True)
    strategy = tailorml.STRATEGIES["by_need"](target=0.01)  # a built strategy does the same
    again = tailorml.personalize_one(config, prepared, fit.model, PERSON, strategy)
    assert again.method == kept.method and again.after == pytest.approx(kept.after, nan_ok=True)


def test_personalize_one_refuses_an_unknown_person_or_method(notebook):
    config, prepared, fit, _, _ = notebook
    with pytest.raises(tailorml.TailormlError, match="unknown individual 'nobody'"):
        tailorml.personalize_one(config, prepared, fit.model, "nobody")
    with pytest.raises(tailorml.TailormlError, match="unknown method 'magic'"):
        tailorml.personalize_one(config, prepared, fit.model, PERSON, "magic")


def test_every_public_name_resolves_and_is_listed():
    for name in tailorml.__all__:
        assert getattr(tailorml, name) is not None
    assert set(tailorml.__all__) <= set(dir(tailorml))
    assert tailorml.STRATEGIES["transfer"].label == "TL"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tailorml.nope  # noqa: B018


def test_import_tailorml_loads_no_torch():
    code = (
        "import sys, tailorml; "
        "assert tailorml.__version__; "
        "assert 'torch' not in sys.modules, 'torch loaded'; "
        "from tailorml import errors; "  # a submodule still imports past __getattr__
        "assert errors.TailormlError is tailorml.TailormlError"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_soft_personalization_in_memory_refuses_too_little_data_and_writes_nothing(
    notebook, tmp_path, monkeypatch
):
    """`tm.propose` on the notebook's model: the person's training part (a share of 3
    days) is below the data gate's 7 days, so the session is refused before any candidate
    trains, and nothing is written anywhere."""
    import tailorml as tm

    config, prepared, fit, _, _ = notebook
    monkeypatch.chdir(tmp_path)
    data = tm.personal_data(prepared, config, config.experiment.general_stride)
    proposal = tm.propose(fit.model, data, PERSON, tm.SoftSettings.from_config(config))
    days = len(prepared.trace(PERSON, "train")) * 5 / 1440
    assert days < config.soft.min_days == 7
    assert proposal.refused is not None and f"{days:.1f} days of data, need 7" in proposal.refused
    assert proposal.candidates == [] and proposal.chosen is None
    assert proposal.summary["data_gate"]["passed"] is False
    assert list(tmp_path.iterdir()) == []
