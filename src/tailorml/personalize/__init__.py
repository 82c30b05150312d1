"""Personalization strategies; importing the package registers all of them."""

from tailorml.personalize import (  # noqa: F401  (registration)
    fair,
    generalize,
    grouping,
    robust,
    shaping,
)
from tailorml.personalize.base import REGISTRY, Context, Plan, Strategy, execute, make_strategy

__all__ = ["REGISTRY", "Context", "Plan", "Strategy", "execute", "make_strategy"]
