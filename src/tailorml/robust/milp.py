"""Exact worst case of a small ReLU network over a box, as a mixed-integer linear program.

The reference for the *tightness* of our bounds: CROWN and IBP give lower bounds of
min_{x in box} c·f(x); the MILP (Tjeng et al. 2019 big-M encoding, solved by HiGHS through
scipy.optimize.milp) gives the minimum itself. Exponential in the number of unstable ReLUs,
so only for tiny networks (tests, benchmarks). Affine layers and ReLU only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from tailorml.robust.bounds import UnsupportedLayerError, propagate
from tailorml.robust.ops import AffineOp, ReLUOp
from tailorml.robust.perturbation import SensorError


@dataclass
class MilpResult:
    value: float  # exact minimum of spec · output over the box
    argmin: np.ndarray  # an input attaining it
    unstable: int  # ReLUs that needed a binary variable


def _dense(op: AffineOp, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The op as y = W x + b on flattened vectors, read off by applying it to a basis."""
    n = int(np.prod(shape))
    with torch.no_grad():
        zero = op.forward(torch.zeros(1, *shape, dtype=torch.float64)).flatten(1)
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
        columns = op.forward(basis).flatten(1) - zero
    return columns.T.numpy(), zero[0].numpy()


def minimize(
    model: nn.Module, x: torch.Tensor, spec: np.ndarray, perturbation: SensorError
) -> MilpResult:
    """min spec · model(x') over x' in the box around the single sample `x` (shape (1, ...))."""
    model = copy.deepcopy(model).double().eval()
    x = x.double()
    lower_in, upper_in = perturbation.box(x)
    with torch.no_grad():
        propagation = propagate(model, lower_in, upper_in, "crown")
    shape = tuple(x.shape[1:])
    variable_lower = list(lower_in.flatten().numpy())
    variable_upper = list(upper_in.flatten().numpy())
    integrality = [0] * len(variable_lower)
    rows: list[tuple[dict[int, float], float, float]] = []  # ({var: coef}, lb, ub)
    current = list(range(len(variable_lower)))  # variable ids of the current activation
    unstable = 0

    def new_variable(low: float, high: float, integer: bool = False) -> int:
        variable_lower.append(low)
        variable_upper.append(high)
        integrality.append(1 if integer else 0)
        return len(variable_lower) - 1

    for index, op in enumerate(propagation.ops):
        if isinstance(op, AffineOp):
            weight, bias = _dense(op, shape)
            outputs = []
            for row, offset in zip(weight, bias, strict=True):
                out = new_variable(-np.inf, np.inf)
                coefficients = {current[k]: -w for k, w in enumerate(row) if w != 0}
                coefficients[out] = 1.0
                rows.append((coefficients, offset, offset))  # out - W x = b
                outputs.append(out)
            current = outputs
            with torch.no_grad():
                shape = tuple(op.forward(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:])
        elif isinstance(op, ReLUOp):
            low, high = (t.flatten().numpy() for t in propagation.intermediate[index])
            outputs = []
            for k, z in enumerate(current):
                if low[k] >= 0:
                    outputs.append(z)
                    continue
                if high[k] <= 0:
                    outputs.append(new_variable(0.0, 0.0))
                    continue
                unstable += 1
                y = new_variable(0.0, float(high[k]))
                d = new_variable(0.0, 1.0, integer=True)
                rows.append(({y: 1.0, z: -1.0}, 0.0, np.inf))  # y >= z
                rows.append(({y: 1.0, d: -float(high[k])}, -np.inf, 0.0))  # y <= u d
                # y <= z - l (1 - d)  <=>  y - z - l d <= -l
                rows.append(({y: 1.0, z: -1.0, d: -float(low[k])}, -np.inf, -float(low[k])))
                outputs.append(y)
            current = outputs
        else:
            raise UnsupportedLayerError(
                f"the MILP encodes affine layers and ReLU only, not {type(op).__name__}"
            )
    matrix = sp.lil_matrix((len(rows), len(variable_lower)))
    row_lower, row_upper = np.empty(len(rows)), np.empty(len(rows))
    for r, (coefficients, low, high) in enumerate(rows):
        for variable, value in coefficients.items():
            matrix[r, variable] = value
        row_lower[r], row_upper[r] = low, high
    objective = np.zeros(len(variable_lower))
    for k, weight in enumerate(np.asarray(spec, dtype=np.float64)):
        objective[current[k]] += weight
    result = milp(
        objective,
        integrality=np.array(integrality),
        bounds=Bounds(np.array(variable_lower), np.array(variable_upper)),
        constraints=LinearConstraint(matrix.tocsr(), row_lower, row_upper),
        options={"mip_rel_gap": 0.0},
    )
    if not result.success:
        raise RuntimeError(f"MILP solver failed: {result.message}")
    n_inputs = int(np.prod(x.shape[1:]))
    return MilpResult(float(result.fun), result.x[:n_inputs].reshape(x.shape[1:]), unstable)
