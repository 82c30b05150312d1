"""The parity ladder: proof that the device computes what Python computes.

float model -> int8 reference: the decisions agree on (nearly) every window, and the alert
metrics per individual stand side by side (quantization is allowed to change a few
decisions; the report shows what that costs). int8 reference -> host C -> emulated
microcontroller: the int16 logits are identical, bit for bit, on every window compared
(those two rungs are built where the C runs: `tailorml.deploy.target.host.host_rung` and
`tailorml.deploy.target.budget.emulated_rung`, on the windows `check_windows` picks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tailorml.data.prepared import Prepared
from tailorml.deploy.int8.quantize import QuantizedModel
from tailorml.models.cnn import SmallCNN
from tailorml.policy import AlertPolicy
from tailorml.progress import SILENT, Reporter

SIDE_BY_SIDE = ("hypo_sensitivity_early", "hypo_sensitivity", "false_alerts_per_day")


@dataclass
class Rung:
    """One comparison of the ladder."""

    name: str  # e.g. "int8 reference -> host C"
    windows: int
    individuals: int
    decision_agreement: float
    identical_logits: bool | None  # None where logits are not expected to be identical
    max_logit_difference: float

    def to_dict(self) -> dict:
        return asdict(self)


def float_logits(model: SmallCNN, windows: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(windows)).double().numpy()


def individuals_with(prepared: Prepared, part: str) -> list[str]:
    return [i for i in prepared.cohort.ids if len(prepared.splits.of(i, part))]


def side_by_side(
    model: SmallCNN,
    quantized: QuantizedModel,
    prepared: Prepared,
    part: str,
    reporter: Reporter = SILENT,
) -> tuple[Rung, pd.DataFrame, np.ndarray]:
    """Float vs int8 reference on every `part` window of every individual: the rung, one
    row per individual (agreement and alert metrics of both), and the int8 logits."""
    policy, windows = model.policy, prepared.windows
    rows, all_logits = [], {}
    agree = compared = 0
    largest = 0.0
    people = individuals_with(prepared, part)
    with reporter.task("float vs int8 reference", total=len(people)) as task:
        for individual in people:
            indices = prepared.splits.of(individual, part)
            x = windows.x[indices]
            float_logit = float_logits(model, x)
            probabilities = torch.softmax(torch.as_tensor(float_logit), dim=1).numpy()
            logits = quantized.logits(x)
            all_logits[individual] = logits
            decided_float = policy.decide(probabilities)
            decided_int8 = quantized.decide(logits)
            same = decided_float == decided_int8
            agree += int(same.sum())
            compared += len(indices)
            largest = max(
                largest, float(np.abs(logits * quantized.logit_scale - float_logit).max())
            )
            row = {"individual": individual, "windows": len(indices), "agreement": same.mean()}
            for label, decided in (("float", decided_float), ("int8", decided_int8)):
                metrics = decision_metrics(policy, prepared, individual, part, decided)
                row["hypo_events"] = metrics["hypo_events"]
                for key in SIDE_BY_SIDE:
                    row[f"{key}_{label}"] = metrics[key]
            rows.append(row)
            task.advance()
    rung = Rung(
        name="float model -> int8 reference",
        windows=compared,
        individuals=len(people),
        decision_agreement=agree / compared if compared else float("nan"),
        identical_logits=None,
        max_logit_difference=largest,
    )
    return rung, pd.DataFrame(rows), all_logits


def decision_metrics(
    policy: AlertPolicy, prepared: Prepared, individual: str, part: str, decided: np.ndarray
) -> dict[str, float]:
    """Alert metrics of one individual's decided classes on `part` (one per window, in
    time order), against the events of that part's CGM trace."""
    windows = prepared.windows
    indices = prepared.splits.of(individual, part)
    trace = prepared.trace(individual, part)
    return policy.metrics_of_alerts(
        policy.hypo_events(trace["time"].to_numpy(), trace["cgm"].to_numpy()),
        windows.time[indices],
        np.asarray(decided) == policy.alert_index,
        windows.y[indices] == policy.alert_index,
        windows.current_cgm[indices],
        windows.previous_cgm[indices],
    )


def compare_logits(
    name: str, expected: np.ndarray, got: np.ndarray, expected_classes, got_classes, people: int
) -> Rung:
    """A bit-for-bit rung: int16 logits and decided classes of two implementations."""
    return Rung(
        name=name,
        windows=len(expected),
        individuals=people,
        decision_agreement=float(np.mean(np.asarray(expected_classes) == np.asarray(got_classes)))
        if len(expected)
        else float("nan"),
        identical_logits=bool(np.array_equal(expected, got)),
        max_logit_difference=float(
            np.abs(expected.astype(np.int64) - got.astype(np.int64)).max(initial=0)
        ),
    )


# -- the windows of the last rung, and the anchor beside the first ----------------------------


def emulated_individuals(prepared: Prepared, count: int, part: str) -> list[str]:
    """`count` individuals spread evenly over the sorted ids (so every group shows up)."""
    people = sorted(individuals_with(prepared, part))
    if count <= 0 or not people:
        return []
    picks = np.unique(np.linspace(0, len(people) - 1, min(count, len(people))).round())
    return [people[int(i)] for i in picks]


def check_windows(
    prepared: Prepared, quantized: QuantizedModel, emulate: int, part: str
) -> dict[str, np.ndarray]:
    """Every `part` window of `emulate` individuals (`emulated_individuals`) with the
    reference's logits and classes: what the emulated target must compute bit for bit."""
    people = emulated_individuals(prepared, emulate, part)
    if people:
        indices = np.concatenate([prepared.splits.of(i, part) for i in people])
    else:  # still run one window, for the budget
        indices = prepared.splits.pooled(part)[:1]
    windows = prepared.windows.x[indices]
    logits = quantized.logits(windows)
    return {
        "readings": quantized.readings(windows),
        "logits": logits,
        "classes": quantized.decide(logits),
        "individuals": np.array(people, dtype=str),
    }


def with_onnx_anchor(
    model: SmallCNN,
    calibration: np.ndarray,
    prepared: Prepared,
    table: pd.DataFrame,
    folder: Path,
    part: str,
    reporter: Reporter = SILENT,
) -> pd.DataFrame:
    """`table` (from `side_by_side`) with onnxruntime int8's alert metrics per individual
    beside ours (the accuracy anchor); its float and int8 ONNX files go into `folder`."""
    from tailorml.deploy.int8.onnx_int8 import export_onnx, onnx_proba, quantize_onnx_int8

    policy, windows = model.policy, prepared.windows
    folder.mkdir(exist_ok=True)
    reporter.log("onnxruntime int8 anchor: exporting and quantizing")
    export_onnx(model, folder / "model.onnx")
    quantize_onnx_int8(folder / "model.onnx", calibration, folder / "model_int8.onnx")
    rows = []
    for individual in table["individual"]:
        indices = prepared.splits.of(individual, part)
        decided = policy.decide(onnx_proba(folder / "model_int8.onnx", windows.x[indices]))
        metrics = decision_metrics(policy, prepared, individual, part, decided)
        rows.append(
            {f"{key}_onnxruntime": metrics[key] for key in SIDE_BY_SIDE}
            | {"decided_hypo_onnxruntime": int((decided == policy.alert_index).sum())}
        )
    return pd.concat([table, pd.DataFrame(rows)], axis=1)


def anchor_summary(table: pd.DataFrame) -> dict[str, float | None]:
    """Means over individuals of the side-by-side metrics (NaN-free ones only)."""
    summary = {}
    for key in SIDE_BY_SIDE:
        for label in ("float", "int8", "onnxruntime"):
            column = table[f"{key}_{label}"].astype(float)
            finite = column[np.isfinite(column)]
            summary[f"{key}_{label}"] = float(finite.mean()) if len(finite) else None
    return summary
