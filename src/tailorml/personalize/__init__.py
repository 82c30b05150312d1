"""Personalization strategies; importing the package registers all of them."""

from tailorml.personalize import grouping, robust, shaping  # noqa: F401  (registration)
from tailorml.personalize.base import REGISTRY, Context, Plan, Strategy, execute, make_strategy

__all__ = ["REGISTRY", "Context", "Plan", "Strategy", "execute", "make_strategy"]
