"""Classification metrics per individual and their spread across individuals.

Accuracy and balanced accuracy come from scikit-learn; balanced accuracy averages the
recall of the classes present in `y_true` (an individual without hyper windows is judged
on in-range and hypo recall only).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

from tailorml.data.glucose import CLASSES


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str] | None = CLASSES
) -> dict[str, float]:
    """accuracy, balanced_accuracy and recall_<class> (NaN for a class absent from y_true);
    with `class_names=None` (many classes) only the first two."""
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if class_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {
                "accuracy": float(accuracy_score(y_true, y_pred)),
                "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            }
    labels = list(range(len(class_names)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    support = matrix.sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about absent classes; we report NaN
        result = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        }
    for index, name in enumerate(class_names):
        result[f"recall_{name}"] = (
            float(matrix[index, index] / support[index]) if support[index] else float("nan")
        )
    return result


def spread(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """mean, sd (sample, ddof=1), min and max across individuals, ignoring NaN."""
    values = table[columns].astype(float)
    return pd.DataFrame(
        {
            "mean": values.mean(),
            "sd": values.std(ddof=1),
            "min": values.min(),
            "max": values.max(),
            "n": values.notna().sum(),
        }
    )
