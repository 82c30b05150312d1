"""Shaping methods of "Personalization of Deep Learning" (Algorithm 1) and two common
fine-tuning baselines, each as a plan for the one training loop.

- Baseline: the predefined model, trained on D_G only.
- Baseline with D_I: trained from scratch on D_G ∪ D_I.
- ES(n), early shaping: n iterations on D_I, then training on D_G.
- SW(n_I), sample weighing: every n_I-th batch from D_I (n_I < 1: all but every 1/n_I-th).
- TL(n, frozen_layers), transfer learning ("late shaping"): n iterations on D_I starting from
  the global model, the first `frozen_layers` parametrised layers frozen.
- Last layer: TL with every layer but the classifier frozen.
- L2-SP(n, alpha): TL with a penalty pulling weights back to the global model's
  (Li, Grandvalet & Davoine, ICML 2018).
"""

from __future__ import annotations

import numpy as np

from tailorml.models.cnn import layer_prefixes
from tailorml.models.schedule import check_periodicity, epochs, iterations, sample_weighing
from tailorml.personalize.base import Context, Plan, Strategy


def _positive_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


class Baseline(Strategy):
    name = "baseline"
    label = "Baseline"

    def plan(self, context: Context) -> Plan:
        return Plan(start="global")  # the global model itself, unchanged


class BaselineWithIndividual(Strategy):
    name = "baseline_with_individual"
    label = "Baseline+D_I"

    def plan(self, context: Context) -> Plan:
        union = np.concatenate([context.general, context.own])
        budget = context.budget
        return Plan(
            start="scratch",
            sources={"union": union},
            schedule=epochs("union", len(union), budget.batch_size, budget.epochs, context.seed),
        )


class EarlyShaping(Strategy):
    name = "early_shaping"
    label = "ES"

    def __init__(self, n: int = 40) -> None:
        self.n = _positive_int("n", n)

    def plan(self, context: Context) -> Plan:
        budget, general, own = context.budget, context.general, context.own
        first = iterations("individual", len(own), budget.batch_size, self.n, context.seed)
        then = epochs("general", len(general), budget.batch_size, budget.epochs, context.seed + 1)
        return Plan(
            start="scratch",
            sources={"individual": own, "general": general},
            schedule=first + then,
        )


class SampleWeighing(Strategy):
    name = "sample_weighing"
    label = "SW"

    def __init__(self, n_i: float = 2) -> None:
        check_periodicity(n_i)
        self.n_i = n_i

    def plan(self, context: Context) -> Plan:
        return weighed_plan(context, context.own, self.n_i)


def weighed_plan(context: Context, individual: np.ndarray, n_i: float) -> Plan:
    """SW over D_G and `individual` (D_I, or D_I extended by data grouping)."""
    budget, general = context.budget, context.general
    return Plan(
        start="scratch",
        sources={"individual": individual, "general": general},
        schedule=sample_weighing(
            len(general), len(individual), budget.batch_size, budget.epochs, n_i, context.seed
        ),
    )


class TransferLearning(Strategy):
    name = "transfer"
    label = "TL"

    def __init__(self, n: int = 10, frozen_layers: int = 0) -> None:
        self.n = _positive_int("n", n)
        self.frozen_layers = _positive_int("frozen_layers", frozen_layers)

    def frozen(self, context: Context) -> list[str]:
        layers = layer_prefixes(context.global_model())
        if self.frozen_layers >= len(layers):
            raise ValueError(
                f"frozen_layers = {self.frozen_layers} would freeze all {len(layers)} layers"
            )
        return layers[: self.frozen_layers]

    def plan(self, context: Context) -> Plan:
        own = context.own
        return Plan(
            start="global",
            sources={"individual": own},
            schedule=iterations(
                "individual", len(own), context.budget.batch_size, self.n, context.seed
            ),
            frozen=self.frozen(context),
        )


class LastLayer(TransferLearning):
    name = "last_layer"
    label = "LastLayer"

    def __init__(self, n: int = 300) -> None:
        super().__init__(n=n, frozen_layers=0)

    def frozen(self, context: Context) -> list[str]:
        return layer_prefixes(context.global_model())[:-1]


class L2SP(TransferLearning):
    name = "l2sp"
    label = "L2-SP"

    def __init__(self, n: int = 300, alpha: float = 0.01) -> None:
        super().__init__(n=n, frozen_layers=0)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = alpha

    def plan(self, context: Context) -> Plan:
        plan = super().plan(context)
        plan.l2sp = self.alpha
        return plan
