"""Data grouping of "Personalization of Deep Learning" (Algorithm 1, lines 11-20): enlarge
D_I with similar data found in an autoencoder's latent space, then train with sample
weighing (n_I = 2, as in the paper). D_I' = D_I ∪ the chosen samples.

- SG(n), single-sample grouping: for each sample of D_I its nearest D_G samples, n in
  total, no sample chosen twice.
- IG(n), individual grouping: the n individuals whose concatenated per-class mean latents
  are closest to I's; their training data.
- Random(n): n random D_G samples, the paper's grouping baseline.
"""

from __future__ import annotations

import numpy as np

from tailorml.personalize.base import Context, Plan, Strategy
from tailorml.personalize.shaping import weighed_plan

GROUPING_N_I = 2


def _count(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def nearest_without_duplicates(query: np.ndarray, pool: np.ndarray, n_total: int) -> np.ndarray:
    """Indices into `pool` (p, d): for each row of `query` (m, d) in order, its nearest pool
    points not yet taken. The n_total picks are spread evenly over the queries: query i takes
    floor((i+1) n/m) - floor(i n/m) points."""
    n_total = min(n_total, len(pool))
    m = len(query)
    quotas = np.diff(np.floor(np.arange(m + 1) * n_total / m).astype(np.int64))
    taken = np.zeros(len(pool), dtype=bool)
    chosen: list[np.ndarray] = []
    squared_pool = (pool.astype(np.float64) ** 2).sum(axis=1)
    for row, quota in zip(query.astype(np.float64), quotas, strict=True):
        if quota == 0:
            continue
        distance = squared_pool - 2.0 * pool @ row  # + |row|^2, the same for every point
        distance[taken] = np.inf
        picks = np.argpartition(distance, quota - 1)[:quota]
        picks = picks[np.argsort(distance[picks], kind="stable")]
        taken[picks] = True
        chosen.append(picks)
    return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)


def class_profile(
    latents: np.ndarray, labels: np.ndarray, n_classes: int, fallback: np.ndarray
) -> np.ndarray:
    """Concatenated per-class mean latent; a class the individual lacks takes `fallback`'s
    row (the class mean over all training data) so that distances stay defined."""
    rows = []
    for label in range(n_classes):
        members = latents[labels == label]
        rows.append(members.mean(axis=0) if len(members) else fallback[label])
    return np.concatenate(rows)


def similar_individuals(target: np.ndarray, candidates: dict[str, np.ndarray], n: int) -> list[str]:
    """The n candidate names whose profile is nearest (Euclidean) to `target`."""
    names = sorted(candidates)
    distances = [float(np.linalg.norm(candidates[name] - target)) for name in names]
    order = np.argsort(distances, kind="stable")
    return [names[i] for i in order[:n]]


class SingleSampleGrouping(Strategy):
    name = "single_sample_grouping"
    label = "SG"
    needs = frozenset({"latents"})

    def __init__(self, n: int = 1500) -> None:
        self.n = _count("n", n)

    def plan(self, context: Context) -> Plan:
        latents, general, own = context.latents(), context.general, context.own
        picks = nearest_without_duplicates(latents[own], latents[general], self.n)
        extended = np.concatenate([own, general[picks]])
        return weighed_plan(context, extended, GROUPING_N_I)


class IndividualGrouping(Strategy):
    name = "individual_grouping"
    label = "IG"
    needs = frozenset({"latents"})

    def __init__(self, n: int = 5) -> None:
        self.n = _count("n", n)

    def chosen(self, context: Context) -> list[str]:
        data, latents = context.data, context.latents()
        everyone = data.all_train()
        fallback = np.stack(
            [
                latents[everyone][data.y[everyone] == label].mean(axis=0)
                if (data.y[everyone] == label).any()
                else np.zeros(latents.shape[1])
                for label in range(data.n_classes)
            ]
        )

        def profile(indices: np.ndarray) -> np.ndarray:
            return class_profile(latents[indices], data.y[indices], data.n_classes, fallback)

        others = data.others(context.individual)
        candidates = {name: profile(indices) for name, indices in others.items()}
        return similar_individuals(profile(context.own), candidates, self.n)

    def plan(self, context: Context) -> Plan:
        others = context.data.others(context.individual)
        group = [others[name] for name in self.chosen(context)]
        extended = np.concatenate([context.own, *group])
        return weighed_plan(context, extended, GROUPING_N_I)


class RandomGrouping(Strategy):
    name = "random_grouping"
    label = "Random"

    def __init__(self, n: int = 1500) -> None:
        self.n = _count("n", n)

    def plan(self, context: Context) -> Plan:
        general = context.general
        rng = np.random.default_rng(np.random.SeedSequence(context.seed, spawn_key=(7,)))
        picks = rng.choice(len(general), size=min(self.n, len(general)), replace=False)
        extended = np.concatenate([context.own, general[np.sort(picks)]])
        return weighed_plan(context, extended, GROUPING_N_I)
