"""A small alert model trained briefly on real windows of three simulated patients
(3 days each), shared by the deployment tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tailorml.config import config_from_dict
from tailorml.data.prepared import Prepared, prepare
from tailorml.models.cnn import SmallCNN
from tailorml.models.recipe import Recipe, fit_predefined, fresh_model
from tailorml.models.train import LabeledData
from tailorml.policy import AlertPolicy

PATIENTS = ["adolescent-003", "adult-008", "child-004"]


@dataclass
class Trained:
    model: SmallCNN
    prepared: Prepared
    train: np.ndarray  # training windows (calibration), raw units
    test: np.ndarray  # test windows, raw units


@pytest.fixture(scope="session")
def trained() -> Trained:
    config = config_from_dict({"cohort": {"individuals": PATIENTS, "max_days": 3.0}})
    prepared = prepare(config)
    windows = prepared.windows
    train, test = prepared.splits.pooled("train"), prepared.splits.pooled("test")
    torch.set_num_threads(1)
    model = fresh_model(config.model, windows.x[train], 3, seed=0)
    recipe = Recipe(8, 128, 5e-3, 1e-4, "balanced")
    general = LabeledData.from_numpy(windows.x[train], windows.y[train])
    fit_predefined(model, general, recipe, n_classes=3, seed=0)
    model.eval()
    model.policy = AlertPolicy.from_config(config, windows.sample_minutes).with_threshold(0.7)
    return Trained(model, prepared, windows.x[train], windows.x[test])
