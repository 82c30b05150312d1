"""Dormand-Prince 5(4) with the step control of scipy's `ode(...).set_integrator("dopri5")`,
for many independent systems (columns) at once.

Why a replica rather than a fixed-step scheme: simglucose integrates every simulated minute
with scipy's `dopri5` at its defaults (rtol 1e-6, atol 1e-12, no maximum step: the step is
capped by the interval), restarting the step-size guess (`hinit`) on every call. Taking the
same steps with the same rules, each column separately, reproduces simglucose's numbers to
rounding level, so the batched simulator is the same simulator, not an approximation with
its own error to argue about. Each column keeps its own step size, acceptance and
rejection; finished columns are dropped from the work arrays so the cost follows the
columns still stepping.

Constants and formulas follow Hairer & Wanner's DOPRI5 (as translated in scipy's dop.c).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RTOL, ATOL = 1e-6, 1e-12  # scipy's dopri5 defaults, as simglucose uses them
MAX_STEPS = 500  # scipy's `nsteps` default: steps allowed per call (per minute here)
_UROUND = 2.220446049250313e-16
_SAFE, _FAC1, _FAC2, _BETA = 0.9, 0.2, 10.0, 0.04  # scipy passes beta=0 -> DOPRI5's 0.04
_EXPO1 = 0.2 - _BETA * 0.75
_FACC1, _FACC2 = 1.0 / _FAC1, 1.0 / _FAC2

A21 = 0.2
A31, A32 = 3.0 / 40.0, 9.0 / 40.0
A41, A42, A43 = 44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0
A51, A52, A53, A54 = 19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0
A61, A62, A63 = 9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0
A64, A65 = 49.0 / 176.0, -5103.0 / 18656.0
A71, A73, A74, A75, A76 = (
    35.0 / 384.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0,
)  # fmt: skip
E1, E3, E4, E5, E6, E7 = (
    71.0 / 57600.0, -71.0 / 16695.0, 71.0 / 1920.0, -17253.0 / 339200.0, 22.0 / 525.0,
    -1.0 / 40.0,
)  # fmt: skip

Rhs = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (states, coefficients) -> dx/dt


class IntegrationError(ArithmeticError):
    """The integrator could not advance some columns (listed in `columns`)."""

    def __init__(self, message: str, columns: np.ndarray) -> None:
        super().__init__(message)
        self.columns = columns


def _sum_rows(a: np.ndarray) -> np.ndarray:
    """Sum over states in index order, as the C loop does (rounding included)."""
    total = a[0].copy()
    for row in a[1:]:
        total += row
    return total


def _initial_step(
    rhs: Rhs, y: np.ndarray, c: np.ndarray, f0: np.ndarray, hmax: float
) -> np.ndarray:
    """DOPRI5's `hinit`: a first step size per column from one explicit Euler probe."""
    sk = ATOL + RTOL * np.abs(y)
    dnf = _sum_rows(np.square(f0 / sk))
    dny = _sum_rows(np.square(y / sk))
    tiny = (dnf <= 1e-10) | (dny <= 1e-10)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(tiny, 1e-6, np.sqrt(dny / dnf) * 0.01)
    h = np.fmin(h, hmax)
    f1 = rhs(y + h * f0, c)
    der2 = np.sqrt(_sum_rows(np.square((f1 - f0) / sk))) / h
    der12 = np.fmax(np.abs(der2), np.sqrt(dnf))
    with np.errstate(divide="ignore"):
        h1 = np.where(
            der12 <= 1e-15, np.fmax(1e-6, np.abs(h) * 1e-3), np.power(0.01 / der12, 1.0 / 5)
        )
    return np.fmin(np.fmin(100.0 * np.abs(h), h1), hmax)


def integrate(rhs: Rhs, y: np.ndarray, c: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Advance every column of `y` (states x columns) from `t0` to `t1` under `rhs(y, c)`.

    Equivalent, column by column, to a fresh `scipy.integrate.ode(rhs).set_integrator(
    "dopri5")` call integrating from `t0` to `t1` (the right-hand side may not depend on
    time). Raises IntegrationError naming the columns that need more than MAX_STEPS steps,
    whose step size underflows, or whose state stops being finite.
    """
    out = y.copy()
    hmax = t1 - t0
    k1 = rhs(y, c)
    h = _initial_step(rhs, y, c, k1, hmax)
    todo = np.arange(y.shape[1])
    y, x = y.copy(), np.full(todo.size, float(t0))
    facold = np.full(todo.size, 1e-4)
    last = np.zeros(todo.size, dtype=bool)
    reject = np.zeros(todo.size, dtype=bool)
    any_reject = False  # most steps are accepted everywhere: skip the masking then
    steps = 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        while todo.size:
            if steps > MAX_STEPS:
                raise IntegrationError(f"more than {MAX_STEPS} steps in one interval", todo)
            tiny = 0.1 * np.abs(h) <= np.abs(x) * _UROUND
            if tiny.any() or not np.isfinite(h).all():
                raise IntegrationError("step size became too small", todo[tiny | ~np.isfinite(h)])
            steps += 1
            cut = (x + 1.01 * h - t1) > 0.0
            h = np.where(cut, t1 - x, h)
            last |= cut

            k2 = rhs(y + h * A21 * k1, c)
            k3 = rhs(y + h * (A31 * k1 + A32 * k2), c)
            k4 = rhs(y + h * (A41 * k1 + A42 * k2 + A43 * k3), c)
            k5 = rhs(y + h * (A51 * k1 + A52 * k2 + A53 * k3 + A54 * k4), c)
            k6 = rhs(y + h * (A61 * k1 + A62 * k2 + A63 * k3 + A64 * k4 + A65 * k5), c)
            y1 = y + h * (A71 * k1 + A73 * k3 + A74 * k4 + A75 * k5 + A76 * k6)
            k7 = rhs(y1, c)
            error = (E1 * k1 + E3 * k3 + E4 * k4 + E5 * k5 + E6 * k6 + E7 * k7) * h
            sk = ATOL + RTOL * np.fmax(np.abs(y), np.abs(y1))
            err = np.sqrt(_sum_rows(np.square(error / sk)) / y.shape[0])
            fac11 = np.power(err, _EXPO1)
            fac = np.fmax(_FACC2, np.fmin(_FACC1, fac11 / np.power(facold, _BETA) / _SAFE))
            h_new = h / fac

            accepted = err <= 1.0
            if accepted.all():
                facold = np.fmax(err, 1e-4)
                y, k1, x = y1, k7, x + h
                h_accepted = np.fmin(np.abs(h_new), hmax)
                if any_reject:
                    h_accepted = np.where(reject, np.fmin(h_accepted, np.abs(h)), h_accepted)
                    reject[:] = False
                    any_reject = False
                h = h_accepted
                done = last
            else:
                facold = np.where(accepted, np.fmax(err, 1e-4), facold)
                y = np.where(accepted, y1, y)
                k1 = np.where(accepted, k7, k1)
                x = np.where(accepted, x + h, x)
                h_accepted = np.fmin(np.abs(h_new), hmax)
                h_accepted = np.where(reject, np.fmin(h_accepted, np.abs(h)), h_accepted)
                h = np.where(accepted, h_accepted, h / np.fmin(_FACC1, fac11 / _SAFE))
                reject = ~accepted
                any_reject = True
                done = accepted & last
                last = last & accepted

            if done.any():
                out[:, todo[done]] = y[:, done]
                keep = ~done
                todo, y, c, k1 = todo[keep], y[:, keep], c[:, keep], k1[:, keep]
                x, h, facold = x[keep], h[keep], facold[keep]
                last, reject = last[keep], reject[keep]
    bad = ~np.isfinite(out).all(axis=0)
    if bad.any():
        raise IntegrationError("the state stopped being finite", np.flatnonzero(bad))
    return out
