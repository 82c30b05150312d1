"""The UVA/Padova type-1 diabetes model of `simglucose`'s `T1DPatient`, for many patients at once.

The equations and their floating-point order are those of `T1DPatient.model` (simglucose
0.2.11), written over arrays whose columns are patients, so one NumPy operation advances a
whole cohort. Keeping the order of the arithmetic lets the batched simulator reproduce
simglucose's numbers to rounding level rather than merely to the integrator's tolerance.

A state is a (13, n) array (the 13 compartments of `T1DPatient`, one column per patient).
Per-patient numbers - parameters and this minute's inputs - are rows of one (len(ROWS), n)
array, so a subset of patients is one fancy index away (the integrator drops finished
patients between steps).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_STATES = 13
_MASKED_STATES = np.array([3, 4, 5, 9, 10, 11, 12])  # derivative zeroed while the state is < 0

# simglucose's parameter names that the equations read.
PARAMETERS = (
    "BW", "kabs", "kmax", "kmin", "b", "d", "Vg", "Vi", "Vmx", "Km0", "k2", "k1", "p2u",
    "m1", "m2", "m4", "m30", "ki", "kp1", "kp2", "kp3", "f", "ke1", "ke2", "Fsnc", "Vm0",
    "kd", "ksc", "ka1", "ka2", "Ib", "u2ss",
)  # fmt: skip
# Derived constants, computed once exactly as the model computes them on every call.
_DERIVED = ("half_kgut_range", "f_kabs", "neg_kabs")
# The 9 equations of the form  a*u + b*v  (with u, v states or simple terms, see
# `derivatives`) are evaluated together: their coefficients a and b are two blocks of rows.
_LINEAR_EQUATIONS = np.array([0, 5, 6, 7, 8, 9, 10, 11, 12])
_FIRST = ("neg_kmax", "neg_m2_m4", "neg_p2u", "neg_ki", "neg_ki_", "neg_m1_m30", "one", "kd_",
          "neg_ksc")  # fmt: skip
_SECOND = ("one_", "m1_", "p2u_", "zero", "zero_", "m2_", "neg_ka1_kd", "neg_ka2", "ksc_")
# Terms u and v as rows of the stacked array v (see `derivatives`): 0-12 states, 13 meal,
# 14 insulin, 15 It - Ib, 16 x7 - It, 17 x8 - x7 (a zero coefficient pads single terms).
_FIRST_TERM = np.array([0, 5, 6, 16, 17, 9, 14, 10, 12])
_SECOND_TERM = np.array([13, 9, 15, 13, 13, 5, 10, 11, 3])
# This minute's inputs (see `set_inputs`); meal and insulin, aa and cc, b_dbar and d_dbar
# are adjacent so each pair is one slice.
INPUTS = ("meal_mg", "insulin_pmol", "kgut_low", "kgut_half_range", "aa", "cc", "b_dbar",
          "d_dbar")  # fmt: skip
ROWS = {name: i for i, name in enumerate(PARAMETERS + _DERIVED + _FIRST + _SECOND + INPUTS)}
_FIRST_ROWS = slice(ROWS[_FIRST[0]], ROWS[_FIRST[-1]] + 1)
_SECOND_ROWS = slice(ROWS[_SECOND[0]], ROWS[_SECOND[-1]] + 1)


def parameter_rows(params: pd.DataFrame) -> np.ndarray:
    """The (len(ROWS), n) coefficient array for patients given as rows of simglucose's
    `vpatient_params.csv` (or any table with its columns); inputs start at zero."""
    n = len(params)
    rows = np.zeros((len(ROWS), n))
    p = {name: params[name].to_numpy(dtype=float) for name in PARAMETERS}
    for name in PARAMETERS:
        rows[ROWS[name]] = p[name]
    derived = {
        "half_kgut_range": (p["kmax"] - p["kmin"]) / 2,
        "f_kabs": p["f"] * p["kabs"],
        "neg_kabs": -p["kabs"],
        "neg_kmax": -p["kmax"],
        "neg_m2_m4": -(p["m2"] + p["m4"]),
        "neg_p2u": -p["p2u"],
        "neg_ki": -p["ki"],
        "neg_ki_": -p["ki"],
        "neg_m1_m30": -(p["m1"] + p["m30"]),
        "one": np.ones(n),
        "kd_": p["kd"],
        "neg_ksc": -p["ksc"],
        "one_": np.ones(n),
        "m1_": p["m1"],
        "p2u_": p["p2u"],
        "zero": np.zeros(n),
        "zero_": np.zeros(n),
        "m2_": p["m2"],
        "neg_ka1_kd": -(p["ka1"] + p["kd"]),
        "neg_ka2": -p["ka2"],
        "ksc_": p["ksc"],
    }
    for name, values in derived.items():
        rows[ROWS[name]] = values
    return rows


def initial_state(params: pd.DataFrame) -> np.ndarray:
    """The (13, n) steady state that `T1DPatient.reset` starts from (`x0_ 1` ... `x0_13`)."""
    columns = [f"x0_{i:2d}" for i in range(1, N_STATES + 1)]
    return params[columns].to_numpy(dtype=float).T.copy()


def set_inputs(
    rows: np.ndarray,
    eating_g: np.ndarray,
    insulin_u: np.ndarray,
    last_qsto: np.ndarray,
    last_foodtaken: np.ndarray,
) -> None:
    """Write one minute's inputs into `rows` in place.

    `eating_g`: carbs eaten this minute (g/min); `insulin_u`: insulin delivered (U/min);
    `last_qsto` (mg) and `last_foodtaken` (g) are the meal memory of `T1DPatient.step`
    (the stomach content when the current meal started, and what was eaten of it since).
    """
    r = ROWS
    rows[r["meal_mg"]] = eating_g * 1000
    rows[r["insulin_pmol"]] = insulin_u * 6000 / rows[r["BW"]]
    dbar = last_qsto + last_foodtaken * 1000
    has_food = dbar > 0
    # kgut = kmin + (kmax - kmin)/2 * (...); with nothing eaten yet simglucose uses kmax,
    # which kmax + 0 * (...) gives exactly (and no branch per evaluation)
    rows[r["kgut_low"]] = np.where(has_food, rows[r["kmin"]], rows[r["kmax"]])
    rows[r["kgut_half_range"]] = np.where(has_food, rows[r["half_kgut_range"]], 0.0)
    safe = np.where(has_food, dbar, 1.0)  # no food: kgut = kmax and aa, cc are not used
    rows[r["aa"]] = np.where(has_food, 5 / (2 * safe * (1 - rows[r["b"]])), 0.0)
    rows[r["cc"]] = np.where(has_food, 5 / (2 * safe * rows[r["d"]]), 0.0)
    rows[r["b_dbar"]] = rows[r["b"]] * dbar
    rows[r["d_dbar"]] = rows[r["d"]] * dbar


_I = ROWS  # short names for the row numbers read on every evaluation
_AA_CC = slice(_I["aa"], _I["cc"] + 1)
_BD_DD = slice(_I["b_dbar"], _I["d_dbar"] + 1)
_MEAL_INSULIN = slice(_I["meal_mg"], _I["insulin_pmol"] + 1)
(_KMIN, _HALF, _KMAX, _ZERO, _KABS_NEG, _FKABS, _BW, _KP1, _KP2, _KP3, _KE1, _KE2, _K1, _K2,
 _FSNC, _VM0, _VMX, _KM0, _VI, _IB, _KA1, _KA2) = (
    _I[name] for name in ("kgut_low", "kgut_half_range", "kmax", "zero", "neg_kabs", "f_kabs",
                          "BW", "kp1", "kp2", "kp3", "ke1", "ke2", "k1", "k2", "Fsnc", "Vm0",
                          "Vmx", "Km0", "Vi", "Ib", "ka1", "ka2")
)  # fmt: skip


def derivatives(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """dx/dt of `T1DPatient.model` for every column of `x` (states) and `c` (rows).

    Every term is the model's own product and every sum is taken in the model's order
    (a - b*c is computed as a + (-b)*c, which IEEE arithmetic makes the same number), so the
    result is simglucose's to the last bit; grouping the equations cuts NumPy calls, which is
    what a minute costs at cohort sizes.
    """
    x0, x1, x2, x3, x4, x5, x6, x7, x8 = x[:9]
    dx = np.empty_like(x)
    plasma_insulin = x5 / c[_VI]
    terms = np.concatenate(
        (
            x,
            c[_MEAL_INSULIN],
            (plasma_insulin - c[_IB])[None],
            (x7 - plasma_insulin)[None],
            (x8 - x7)[None],
        )
    )
    linear = c[_FIRST_ROWS] * terms[_FIRST_TERM]
    linear += c[_SECOND_ROWS] * terms[_SECOND_TERM]
    dx[_LINEAR_EQUATIONS] = linear
    dx[5] += c[_KA1] * x[10]
    dx[5] += c[_KA2] * x[11]

    qsto = x0 + x1
    edges = np.tanh(c[_AA_CC] * (qsto - c[_BD_DD]))
    kgut = c[_KMIN] + c[_HALF] * (edges[0] - edges[1] + 2)  # see set_inputs
    kmax = c[_KMAX]
    np.subtract(kmax * x0, x1 * kgut, out=dx[1])
    np.add(kgut * x1, c[_KABS_NEG] * x2, out=dx[2])

    k1_x3, k2_x4 = c[_K1] * x3, c[_K2] * x4
    zero = c[_ZERO]
    glucose = np.maximum(c[_KP1] - c[_KP2] * x3 - c[_KP3] * x8, zero)  # production
    glucose += c[_FKABS] * x2 / c[_BW]  # appearance from the gut
    glucose -= c[_FSNC]
    # renal excretion above a threshold: ke1 * (x3 - ke2), else 0 (the same numbers)
    glucose -= c[_KE1] * np.maximum(x3 - c[_KE2], zero)
    glucose -= k1_x3
    np.add(glucose, k2_x4, out=dx[3])
    uptake = (c[_VM0] + c[_VMX] * x6) * x4 / (c[_KM0] + x4)
    np.subtract(k1_x3 - uptake, k2_x4, out=dx[4])  # = -Uidt + k1*x3 - k2*x4, bit for bit

    if min(x[3:6].min(), x[9:].min()) < 0:  # a mass below zero stops decreasing
        dx[_MASKED_STATES] *= x[_MASKED_STATES] >= 0
    return dx


def subcutaneous_glucose(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """`T1DPatient.observation.Gsub` (mg/dL) of every column."""
    return x[12] / c[ROWS["Vg"]]
