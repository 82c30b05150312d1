import math

import numpy as np
import pandas as pd
import pytest

from tailorml.evaluate.metrics import classification_metrics, spread


def test_classification_metrics_by_hand():
    result = classification_metrics(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 0, 2]))
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["recall_in_range"] == pytest.approx(2 / 3)
    assert result["recall_hypo"] == pytest.approx(1 / 2)
    assert result["recall_hyper"] == pytest.approx(1.0)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_absent_class_is_nan_and_left_out_of_balanced_accuracy():
    result = classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]))
    assert math.isnan(result["recall_hyper"])
    assert result["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)


def test_zero_samples_is_an_error():
    with pytest.raises(ValueError, match="zero samples"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int))


def test_spread_across_individuals_ignores_nan():
    table = pd.DataFrame({"m": [1.0, 2.0, 3.0, np.nan]})
    row = spread(table, ["m"]).loc["m"]
    assert (row["mean"], row["sd"], row["min"], row["max"], row["n"]) == (2.0, 1.0, 1.0, 3.0, 3)
