"""Every personalization method by the name configs use (`[methods.<name>]`,
`[soft.candidates.<name>]`): one explicit table, so what exists is read here, not made by
importing modules for their side effects."""

from __future__ import annotations

import inspect
from typing import Any

from tailorml.errors import ConfigError
from tailorml.personalize.base import Strategy
from tailorml.personalize.fair import ByNeed, GroupDROTraining
from tailorml.personalize.generalize import (
    CoTeachingTransfer,
    FeatureDistilledTransfer,
    MultiModalCoTeaching,
)
from tailorml.personalize.grouping import IndividualGrouping, RandomGrouping, SingleSampleGrouping
from tailorml.personalize.robust import (
    AdversarialFinetuning,
    CertifiedFinetuning,
    CertifiedTraining,
    SparseFinetuning,
)
from tailorml.personalize.shaping import (
    L2SP,
    Baseline,
    BaselineWithIndividual,
    EarlyShaping,
    LastLayer,
    SampleWeighing,
    TransferLearning,
)

STRATEGIES: tuple[type[Strategy], ...] = (
    GroupDROTraining,
    ByNeed,
    FeatureDistilledTransfer,
    CoTeachingTransfer,
    MultiModalCoTeaching,
    Baseline,
    BaselineWithIndividual,
    EarlyShaping,
    SampleWeighing,
    TransferLearning,
    LastLayer,
    L2SP,
    SingleSampleGrouping,
    IndividualGrouping,
    RandomGrouping,
    CertifiedTraining,
    AdversarialFinetuning,
    CertifiedFinetuning,
    SparseFinetuning,
)
REGISTRY: dict[str, type[Strategy]] = {cls.name: cls for cls in STRATEGIES}


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by registry name; bad names and parameters list the valid ones."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown method '{name}'; valid methods: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    valid = list(inspect.signature(cls).parameters)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"method '{name}' has no parameter {', '.join(unknown)}; valid: "
            f"{', '.join(valid) if valid else '(none)'}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"method '{name}': {error}") from None
