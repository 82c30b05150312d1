"""The strategy table is explicit (`tailorml.personalize.strategies`): every concrete
strategy of the personalize package is listed once, by a name of its own."""

import inspect
import pkgutil
from importlib import import_module

import pytest

import tailorml.personalize as personalize
from tailorml.errors import ConfigError
from tailorml.personalize import REGISTRY, make_strategy
from tailorml.personalize.base import Strategy
from tailorml.personalize.strategies import STRATEGIES


def test_every_strategy_class_is_in_the_table_once_under_its_own_name():
    defined = set()
    for module in pkgutil.iter_modules(personalize.__path__):
        found = import_module(f"tailorml.personalize.{module.name}")
        for _, cls in inspect.getmembers(found, inspect.isclass):
            if issubclass(cls, Strategy) and cls is not Strategy and "name" in vars(cls):
                defined.add(cls)
    assert defined == set(STRATEGIES)
    assert len(REGISTRY) == len(STRATEGIES)
    assert all(REGISTRY[cls.name] is cls for cls in STRATEGIES)


def test_a_name_outside_the_table_is_refused_with_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match="unknown method 'fine_tune'; valid methods: adversarial_finetuning, baseline",
    ):
        make_strategy("fine_tune")
    assert make_strategy("by_need", base="l2sp").base_strategy.name == "l2sp"
