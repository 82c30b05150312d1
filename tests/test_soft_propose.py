"""`soft.session.propose`: a whole soft-personalization session in memory, with no
registry and no file, as the service's worker and a notebook call it."""

import torch

from tailorml.config import config_from_dict
from tailorml.personalize.dataset import from_glucose
from tailorml.pipeline import GlobalTraining, fit_global_model
from tailorml.soft.session import PREDEFINED, SoftSettings, propose

PERSON = "adult-008"


def test_propose_judges_every_candidate_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    config = config_from_dict(
        {
            "cohort": {
                "path": "synthetic",
                "individuals": ["adolescent-003", "adult-008", "child-004"],
                "max_days": 3.0,
            },
            "train": {"epochs": 1},
            "soft": {
                "min_days": 1.0,
                "min_hypo_events": 0,
                "min_hyper_events": 0,
                "min_held_out_events": 1,
                "min_fraction_per_range": 0.0,
                "candidates": {"transfer": {"n": [20]}},
            },
        }
    )
    data = from_glucose(config, config.experiment.general_stride)
    training = GlobalTraining.from_config(config, data.glucose.windows.sample_minutes)
    predefined = fit_global_model(data.glucose, training).model
    proposal = propose(predefined, data, PERSON, SoftSettings.from_config(config))
    assert proposal.refused is None
    assert proposal.names[0] == PREDEFINED and len(proposal.names) == 3
    rows = proposal.table()
    assert [row["candidate"] for row in rows] == proposal.names
    assert all("p_hypo_test" not in row for row in rows)
    assert len(proposal.predictions) == len(data.glucose.splits.of(PERSON, "test"))
    assert proposal.chosen is None or proposal.passed[proposal.chosen]
    assert list(tmp_path.iterdir()) == []  # no registry, no artifacts, no card
