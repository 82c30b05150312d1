"""onnxruntime's static int8 quantization of a saved alert model, as the anchor for our own
int8: how often it decides as the float model, and the hypo recall of both, on the test
parts of the configured (default: the shipped) cohort.

    .venv/bin/python benchmarks/onnx_int8_anchor.py --model runs/<run>/model.pt \
        [--calibration 2000] [--seed 0]

Calibration: `--calibration` training windows of all individuals (D_G), drawn with `--seed`.
Hypo recall is per window: of the test windows labelled hypo, the fraction decided hypo under
the model's own alert policy. The cohort is SYNTHETIC: not clinical evidence.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from tailorml.config import Config
from tailorml.data.glucose import HYPO
from tailorml.data.prepared import prepare
from tailorml.deploy.int8.onnx_int8 import (
    decision_agreement,
    export_onnx,
    onnx_proba,
    quantize_onnx_int8,
)
from tailorml.models.cnn import load_model
from tailorml.models.predict import predict_proba
from tailorml.policy import AlertPolicy


def hypo_recall(decisions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(decisions[labels == HYPO] == HYPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--calibration", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load_model(args.model)
    config = Config()
    prepared = prepare(config)
    windows = prepared.windows
    data_policy = AlertPolicy.from_config(config, windows.sample_minutes)
    model.policy.require_same_input(data_policy, args.model, "the default cohort")
    train, test = prepared.splits.pooled("train"), prepared.splits.pooled("test")
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(train, size=min(args.calibration, len(train)), replace=False))
    x_test, y_test = windows.x[test], windows.y[test]
    with tempfile.TemporaryDirectory() as folder:
        float_path, int8_path = Path(folder) / "model.onnx", Path(folder) / "int8.onnx"
        start = time.perf_counter()
        export_onnx(model, float_path)
        exported = time.perf_counter()
        quantize_onnx_int8(float_path, windows.x[chosen], int8_path)
        quantized = time.perf_counter()
        agreement = decision_agreement(model, int8_path, x_test)
        int8_decisions = model.policy.decide(onnx_proba(int8_path, x_test))
        sizes = float_path.stat().st_size, int8_path.stat().st_size
    float_decisions = model.policy.decide(predict_proba(model, x_test))
    print(f"model {args.model} (threshold {model.policy.threshold}); {platform.machine()}")
    print(f"calibration {len(chosen)} training windows; test {len(test)} windows")
    print(f"export {exported - start:.1f} s, quantize {quantized - exported:.1f} s")
    print(f"files: float {sizes[0]:,} B, int8 {sizes[1]:,} B")
    print(
        f"decision agreement {agreement:.4f} ({np.sum(int8_decisions != float_decisions)} differ)"
    )
    lost = np.sum((float_decisions == HYPO) & (int8_decisions != HYPO))
    gained = np.sum((float_decisions != HYPO) & (int8_decisions == HYPO))
    print(f"hypo decisions: {lost} lost and {gained} gained by int8")
    for name, decisions in (("float", float_decisions), ("ORT int8", int8_decisions)):
        print(
            f"{name}: hypo recall {hypo_recall(decisions, y_test):.4f} "
            f"({np.sum(y_test == HYPO)} hypo windows), decided hypo {np.sum(decisions == HYPO)}"
        )


if __name__ == "__main__":
    main()
