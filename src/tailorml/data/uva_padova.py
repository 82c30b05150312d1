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
_DERIVED = ("neg_kmax", "half_kgut_range", "f_kabs", "neg_m2_m4", "neg_p2u", "neg_ki",
            "neg_m1_m30", "ka1_kd", "neg_ksc")  # fmt: skip
# This minute's inputs (see `set_inputs`).
INPUTS = ("meal_mg", "insulin_pmol", "has_food", "aa", "cc", "b_dbar", "d_dbar")
ROWS = {name: i for i, name in enumerate(PARAMETERS + _DERIVED + INPUTS)}


def parameter_rows(params: pd.DataFrame) -> np.ndarray:
    """The (len(ROWS), n) coefficient array for patients given as rows of simglucose's
    `vpatient_params.csv` (or any table with its columns); inputs start at zero."""
    n = len(params)
    rows = np.zeros((len(ROWS), n))
    for name in PARAMETERS:
        rows[ROWS[name]] = params[name].to_numpy(dtype=float)
    p = {name: rows[ROWS[name]] for name in PARAMETERS}
    rows[ROWS["neg_kmax"]] = -p["kmax"]
    rows[ROWS["half_kgut_range"]] = (p["kmax"] - p["kmin"]) / 2
    rows[ROWS["f_kabs"]] = p["f"] * p["kabs"]
    rows[ROWS["neg_m2_m4"]] = -(p["m2"] + p["m4"])
    rows[ROWS["neg_p2u"]] = -p["p2u"]
    rows[ROWS["neg_ki"]] = -p["ki"]
    rows[ROWS["neg_m1_m30"]] = -(p["m1"] + p["m30"])
    rows[ROWS["ka1_kd"]] = p["ka1"] + p["kd"]
    rows[ROWS["neg_ksc"]] = -p["ksc"]
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
    rows[r["has_food"]] = has_food
    safe = np.where(has_food, dbar, 1.0)  # no food: kgut = kmax and aa, cc are not used
    rows[r["aa"]] = np.where(has_food, 5 / (2 * safe * (1 - rows[r["b"]])), 0.0)
    rows[r["cc"]] = np.where(has_food, 5 / (2 * safe * rows[r["d"]]), 0.0)
    rows[r["b_dbar"]] = rows[r["b"]] * dbar
    rows[r["d_dbar"]] = rows[r["d"]] * dbar


def derivatives(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """dx/dt of `T1DPatient.model` for every column of `x` (states) and `c` (rows)."""
    r = ROWS
    x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12 = x
    dx = np.empty_like(x)
    qsto = x0 + x1
    dx[0] = c[r["neg_kmax"]] * x0 + c[r["meal_mg"]]
    kgut = c[r["kmin"]] + c[r["half_kgut_range"]] * (
        np.tanh(c[r["aa"]] * (qsto - c[r["b_dbar"]]))
        - np.tanh(c[r["cc"]] * (qsto - c[r["d_dbar"]]))
        + 2
    )
    kmax = c[r["kmax"]]
    kgut = np.where(c[r["has_food"]] > 0, kgut, kmax)
    dx[1] = kmax * x0 - x1 * kgut
    dx[2] = kgut * x1 - c[r["kabs"]] * x2
    rat = c[r["f_kabs"]] * x2 / c[r["BW"]]
    egp = c[r["kp1"]] - c[r["kp2"]] * x3 - c[r["kp3"]] * x8
    ke2 = c[r["ke2"]]
    renal = np.where(x3 > ke2, c[r["ke1"]] * (x3 - ke2), 0.0)
    k1, k2 = c[r["k1"]], c[r["k2"]]
    dx[3] = np.maximum(egp, 0.0) + rat - c[r["Fsnc"]] - renal - k1 * x3 + k2 * x4
    uptake = (c[r["Vm0"]] + c[r["Vmx"]] * x6) * x4 / (c[r["Km0"]] + x4)
    dx[4] = k1 * x3 - uptake - k2 * x4  # = -Uidt + k1*x3 - k2*x4, bit for bit
    dx[5] = c[r["neg_m2_m4"]] * x5 + c[r["m1"]] * x9 + c[r["ka1"]] * x10 + c[r["ka2"]] * x11
    plasma_insulin = x5 / c[r["Vi"]]
    p2u = c[r["p2u"]]
    dx[6] = c[r["neg_p2u"]] * x6 + p2u * (plasma_insulin - c[r["Ib"]])
    dx[7] = c[r["neg_ki"]] * (x7 - plasma_insulin)
    dx[8] = c[r["neg_ki"]] * (x8 - x7)
    dx[9] = c[r["neg_m1_m30"]] * x9 + c[r["m2"]] * x5
    dx[10] = c[r["insulin_pmol"]] - c[r["ka1_kd"]] * x10
    dx[11] = c[r["kd"]] * x10 - c[r["ka2"]] * x11
    dx[12] = c[r["neg_ksc"]] * x12 + c[r["ksc"]] * x3
    dx[_MASKED_STATES] *= x[_MASKED_STATES] >= 0
    return dx


def subcutaneous_glucose(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """`T1DPatient.observation.Gsub` (mg/dL) of every column."""
    return x[12] / c[ROWS["Vg"]]
