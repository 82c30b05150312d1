"""A process exports a model file to ONNX once: the registry asks again for the predefined
model of every new data directory and every worker's start-up check, and torch's exporter
takes seconds. The same file's bytes are the same export; another file is exported anew."""

from __future__ import annotations

import copy

import pytest
import torch

from tailorml.errors import ModelFileError
from tailorml.models import onnx_runtime
from tailorml.models.cnn import model_bytes


def test_a_model_file_is_exported_once_and_another_file_anew(trained, monkeypatch):
    calls = []
    real = onnx_runtime.onnx_bytes
    monkeypatch.setattr(onnx_runtime, "onnx_bytes", lambda m: calls.append(1) or real(m))
    monkeypatch.setattr(onnx_runtime, "_exported", type(onnx_runtime._exported)())
    data = model_bytes(trained.model)
    first, policy = onnx_runtime.onnx_of_model_file(data, "a.pt")
    again, policy_again = onnx_runtime.onnx_of_model_file(bytes(data), "b.pt")
    assert len(calls) == 1 and again == first and policy_again == policy
    assert policy == trained.model.policy.to_dict()
    moved = copy.deepcopy(trained.model)
    with torch.no_grad():
        next(moved.parameters()).add_(0.01)
    other, _ = onnx_runtime.onnx_of_model_file(model_bytes(moved), "c.pt")
    assert len(calls) == 2 and other != first
    policy["threshold"] = -1.0  # a caller's copy: what is kept does not change
    assert onnx_runtime.onnx_of_model_file(data, "a.pt")[1] == policy_again
    with pytest.raises(ModelFileError):
        onnx_runtime.onnx_of_model_file(b"not a model", "d.pt")
