"""The batched integrator against scipy's own dopri5, column by column."""

import warnings

import numpy as np
import pytest
from scipy.integrate import ode

from tailorml.data import dopri5

# Three systems with different speeds, so each column takes its own steps and rejections.
RATES = np.array([[0.05, 0.9, 3.0], [0.2, 0.02, 1.5]])


def rhs(y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """A damped, nonlinear 2-state system per column (c: per-column rates)."""
    return np.stack([-c[0] * y[0] + y[1], -c[1] * y[1] + np.tanh(3.0 * y[0]) - 0.5 * y[0] ** 3])


def scipy_column(y0: np.ndarray, c: np.ndarray, minutes: int) -> np.ndarray:
    solver = ode(lambda t, y: rhs(y[:, None], c[:, None])[:, 0]).set_integrator("dopri5")
    solver.set_initial_value(y0, 0.0)
    states = []
    for minute in range(minutes):
        solver.integrate(minute + 1.0)  # one call per minute, as simglucose's T1DPatient.step
        states.append(solver.y.copy())
    return np.array(states)


def test_same_steps_as_scipy_dopri5_column_by_column():
    y0 = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    expected = np.stack([scipy_column(y0[:, i], RATES[:, i], 30) for i in range(3)], axis=-1)
    y, got = y0.copy(), []
    for minute in range(30):
        y = dopri5.integrate(rhs, y, RATES, float(minute), minute + 1.0)
        got.append(y)
    got = np.array(got)
    # Same steps and arithmetic: rounding-level agreement, a million times tighter than the
    # integrator's own tolerance (rtol 1e-6), which any other step sequence would show.
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert np.abs(expected[-1] - expected[0]).min() > 1e-3  # the states did move


def test_a_column_that_blows_up_is_named():
    def exploding(y, c):
        return np.stack([c[0] * y[0] ** 3, -y[1]])

    y = np.array([[1.0, 50.0, 1.0], [1.0, 1.0, 1.0]])
    c = np.array([[0.01, 1.0, 0.01]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings leak out either
        with pytest.raises(dopri5.IntegrationError) as error:
            dopri5.integrate(exploding, y, c, 0.0, 1.0)
    assert error.value.columns.tolist() == [1]
