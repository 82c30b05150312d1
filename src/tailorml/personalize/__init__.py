"""Personalization strategies: plans for the one training loop (`base`), every method by
name in one explicit table (`strategies`)."""

from tailorml.personalize.base import Context, Plan, Strategy, execute
from tailorml.personalize.strategies import REGISTRY, make_strategy

__all__ = ["REGISTRY", "Context", "Plan", "Strategy", "execute", "make_strategy"]
