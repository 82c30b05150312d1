"""Class probabilities of a model for a batch of windows, in bounded memory."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Softmax of the model's logits, `batch_size` windows at a time (an empty `x` gives an
    empty (0, classes) array)."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, max(len(x), 1), batch_size):
            logits = model(torch.as_tensor(x[start : start + batch_size], dtype=torch.float32))
            outputs.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(outputs)
