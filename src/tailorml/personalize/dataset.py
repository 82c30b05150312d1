"""One view of a personalization data set, whatever its origin: arrays plus, per individual,
D_I (train and test indices) and D_G (general training and test indices).

The personalization methods and the experiment runner only see this view, so the glucose
cohort and the synthetic writers go through exactly the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tailorml.config import Config, WritersConfig
from tailorml.policy import AlertPolicy

if TYPE_CHECKING:
    from tailorml.data.prepared import Prepared


@dataclass
class PersonalData:
    name: str
    x: np.ndarray  # (n, channels, ...) float32
    y: np.ndarray  # (n,) int64
    ids: list[str]  # the individuals S
    groups: dict[str, str]
    individual_train: dict[str, np.ndarray]  # D_I used for personalization
    individual_test: dict[str, np.ndarray]  # where acc(D_I) is measured
    class_names: list[str]
    dims: int  # 1: sequences, 2: images
    synthetic: bool
    policy: AlertPolicy  # how the task's models decide (alert rule or argmax)
    shared_general: np.ndarray | None = None  # D_G train when it is the same for everybody
    shared_general_test: np.ndarray | None = None
    general_stride: int = 1
    glucose: object | None = None  # the pipeline's Prepared, for alert metrics
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def general_key(self, individual: str) -> str:
        """Individuals with the same key share D_G, hence the same global model."""
        return "shared" if self.shared_general is not None else individual

    def _others(self, individual: str, parts: dict[str, np.ndarray]) -> np.ndarray:
        chosen = [
            indices[:: self.general_stride]
            for other, indices in parts.items()
            if other != individual
        ]
        return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)

    def general_train(self, individual: str) -> np.ndarray:
        """D_G for `individual`: shared general data, or every other individual's training
        windows (every `general_stride`-th: neighbouring CGM windows overlap almost fully)."""
        if self.shared_general is not None:
            return self.shared_general
        return self._others(individual, self.individual_train)

    def general_test(self, individual: str) -> np.ndarray:
        """Where acc(D_G) is measured: general test data, or the others' test windows."""
        if self.shared_general_test is not None:
            return self.shared_general_test
        return self._others(individual, self.individual_test)

    def others(self, individual: str) -> dict[str, np.ndarray]:
        """Candidate individuals for individual grouping, with their training indices."""
        return {
            other: indices[:: self.general_stride]
            for other, indices in self.individual_train.items()
            if other != individual
        }

    def all_train(self) -> np.ndarray:
        """Every training index (the autoencoder's data)."""
        parts = list(self.individual_train.values())
        if self.shared_general is not None:
            parts.append(self.shared_general)
        return np.unique(np.concatenate(parts))

    def skip_reason(
        self, individual: str, min_windows: int, required_classes: list[str]
    ) -> str | None:
        """Why `individual` cannot be personalized (None: it can)."""
        train = self.individual_train[individual]
        if len(train) < min_windows:
            return (
                f"only {len(train)} training samples in D_I, fewer than "
                f"experiment.min_individual_samples = {min_windows}"
            )
        if len(self.individual_test[individual]) == 0:
            return "no test samples in D_I"
        present = set(np.unique(self.y[train]).tolist())
        missing = [c for c in required_classes if self.class_names.index(c) not in present]
        if missing:
            return (
                f"no '{', '.join(missing)}' sample in D_I's training part "
                "(experiment.required_classes)"
            )
        return None


def from_glucose(config: Config, general_stride: int) -> PersonalData:
    """The configured glucose cohort, prepared, as a personalization data set."""
    from tailorml.data.prepared import prepare

    return from_prepared(prepare(config), config, general_stride)


def from_prepared(prepared: Prepared, config: Config, general_stride: int) -> PersonalData:
    """A prepared glucose cohort as a personalization data set: D_I is each individual's
    train and test part, D_G every other individual's (every `general_stride`-th window)."""
    from tailorml.data.glucose import CLASSES

    windows, splits = prepared.windows, prepared.splits
    ids = prepared.cohort.ids
    return PersonalData(
        name="glucose",
        x=windows.x,
        y=windows.y,
        ids=ids,
        groups={individual.id: individual.group for individual in prepared.cohort.individuals},
        individual_train={i: splits.of(i, "train") for i in ids},
        individual_test={i: splits.of(i, "test") for i in ids},
        class_names=list(CLASSES),
        dims=1,
        synthetic=prepared.cohort.synthetic,
        policy=AlertPolicy.from_config(config, prepared.cohort.sample_minutes),
        general_stride=general_stride,
        glucose=prepared,
    )


def from_writers(config: WritersConfig) -> PersonalData:
    from tailorml.data.writers import CLASS_NAMES, make_writers

    writers = make_writers(config)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2,)))
    ids = writers.names[: writers.n_individuals]
    train, test, groups = {}, {}, {}
    for index, name in enumerate(ids):
        mine = rng.permutation(np.flatnonzero(writers.writer == index))
        cut = round(len(mine) * config.individual_train_fraction)
        train[name], test[name] = np.sort(mine[:cut]), np.sort(mine[cut:])
        swapped = writers.styles[index].swap is not None
        groups[name] = "personal-labels" if swapped else "standard-labels"
    general = rng.permutation(np.flatnonzero(writers.writer >= writers.n_individuals))
    cut = round(len(general) * config.general_test_fraction)
    return PersonalData(
        name="writers",
        x=writers.images,
        y=writers.labels,
        ids=ids,
        groups=groups,
        individual_train=train,
        individual_test=test,
        class_names=list(CLASS_NAMES),
        dims=2,
        synthetic=True,
        policy=AlertPolicy.argmax(CLASS_NAMES),
        shared_general=np.sort(general[cut:]),
        shared_general_test=np.sort(general[:cut]),
        notes={"swaps": str(sum(s.swap is not None for s in writers.styles))},
    )
