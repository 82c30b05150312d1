"""Expand a methods table (`[methods]` of an experiment, `soft.candidates`) into concrete
settings: a hyper-parameter grid of strategies."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from tailorml.errors import ConfigError
from tailorml.personalize.base import Strategy
from tailorml.personalize.strategies import make_strategy


@dataclass(frozen=True)
class Setting:
    method: str
    params: tuple[tuple[str, Any], ...]

    def strategy(self) -> Strategy:
        return make_strategy(self.method, **dict(self.params))

    @property
    def needs(self) -> frozenset[str]:
        """What the strategy's plan looks at beyond data and models (see `Strategy.needs`)."""
        return self.strategy().needs

    @property
    def label(self) -> str:
        """Display name, e.g. 'ES(n=40)'."""
        return self.strategy().describe()

    @property
    def key(self) -> str:
        """File-name-safe identifier, e.g. 'early_shaping-n40'."""
        text = self.method + "".join(f"-{name}{value}" for name, value in self.params)
        return re.sub(r"[^A-Za-z0-9_.=-]", "_", text)


EMPTY_TABLE = "the [{table}] table is empty; name at least one method, e.g. baseline = {{}}"
EMPTY_VALUES = (
    "[{table}.{method}] {name} = [] gives the method no setting to run; list at least one "
    "value, or remove [{table}.{method}]"
)
REPEATED_VALUES = "[{table}.{method}] {name} repeats {values}; list each value once"


def expand(methods: dict[str, dict[str, Any]], table: str = "methods") -> list[Setting]:
    """Cartesian product of each method's parameter lists, in config order. Every setting is
    built once here, so an unknown method or parameter fails before any work starts.
    `table` is the config key the grid came from (for the message of an empty grid)."""
    settings = []
    for method, grid in methods.items():
        names = sorted(grid)
        values = [grid[name] if isinstance(grid[name], list) else [grid[name]] for name in names]
        for name, options in zip(names, values, strict=True):
            if not options:  # the product would be empty: the method would silently vanish
                raise ConfigError(EMPTY_VALUES.format(table=table, method=method, name=name))
            repeated = sorted({repr(v) for v in options if options.count(v) > 1})
            if repeated:  # the same setting twice would be one result counted as two tasks
                raise ConfigError(
                    REPEATED_VALUES.format(
                        table=table, method=method, name=name, values=", ".join(repeated)
                    )
                )
        for combination in itertools.product(*values):
            setting = Setting(method, tuple(zip(names, combination, strict=True)))
            setting.strategy()  # validates name, parameters and values
            settings.append(setting)
    if not settings:
        raise ConfigError(EMPTY_TABLE.format(table=table))
    return settings
