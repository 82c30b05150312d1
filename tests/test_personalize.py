"""Each personalization strategy on toy data where the answer is known."""

import numpy as np
import pytest
import torch

from tailorml.config import ModelConfig
from tailorml.errors import ConfigError
from tailorml.models.cnn import build_model, count_parameters, layer_prefixes
from tailorml.models.schedule import sample_weighing, takes_individual_batch
from tailorml.personalize import execute, make_strategy
from tailorml.personalize.base import Budget, Context
from tailorml.personalize.dataset import PersonalData
from tailorml.personalize.grouping import nearest_without_duplicates, similar_individuals
from tailorml.policy import AlertPolicy
from tailorml.recipe import Recipe
from tailorml.robust.perturbation import SensorError
from tailorml.sparse.prune import weight_sparsity

LENGTH = 8


def toy_data() -> PersonalData:
    """Individuals a, b, c (20 train + 10 test samples each) and 200 shared general samples."""
    rng = np.random.default_rng(0)
    n = 3 * 30 + 200
    x = rng.normal(size=(n, 1, LENGTH)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64) + (x[:, 0, 1] > 1).astype(np.int64)
    ids = ["a", "b", "c"]
    train = {name: np.arange(30 * i, 30 * i + 20) for i, name in enumerate(ids)}
    test = {name: np.arange(30 * i + 20, 30 * i + 30) for i, name in enumerate(ids)}
    return PersonalData(
        name="toy",
        x=x,
        y=y,
        ids=ids,
        groups=dict.fromkeys(ids, "g"),
        individual_train=train,
        individual_test=test,
        class_names=["0", "1", "2"],
        dims=1,
        synthetic=True,
        policy=AlertPolicy.argmax(["0", "1", "2"]),
        shared_general=np.arange(90, 290),
        shared_general_test=np.arange(90, 100),
    )


def new_model():
    torch.manual_seed(0)
    config = ModelConfig(conv_channels=[4, 4], kernel_size=3, hidden=8)
    return build_model(config, 1, LENGTH, 3, torch.zeros(1), torch.ones(1))


def recipe(epochs=1, batch_size=4, weight_decay=0.0, robust="none") -> Recipe:
    return Recipe(epochs, batch_size, 2e-3, weight_decay, "balanced", robust)


def context(data=None, latents=None, individual="a", batch_size=4, epochs=1) -> Context:
    data = data or toy_data()
    trained = new_model()
    return Context(
        data=data,
        individual=individual,
        seed=0,
        budget=Budget(recipe(epochs=epochs, batch_size=batch_size)),
        new_model=new_model,
        global_model=lambda: trained,
        latents=lambda: latents if latents is not None else data.x[:, 0, :2],
    )


def test_sample_weighing_with_n_i_2_takes_every_second_batch_from_d_i():
    steps = sample_weighing(n_general=40, n_individual=8, batch_size=4, n_epochs=2, n_i=2, seed=0)
    assert len(steps) == 2 * 10  # ceil(40 / 4) iterations per epoch
    assert [s.source for s in steps[:10]] == ["general", "individual"] * 5
    # with n_i = 2 an epoch sees half of D_G, each sample at most once
    general = np.concatenate([s.indices for s in steps[:10] if s.source == "general"])
    assert len(general) == 20 and len(set(general.tolist())) == 20


def test_sample_weighing_periodicities_follow_the_paper():
    assert [takes_individual_batch(j, 12) for j in range(1, 25)].count(True) == 2
    assert takes_individual_batch(12, 12) and takes_individual_batch(24, 12)
    # n_i < 1: all but every (1/n_i)-th batch come from D_I
    assert [takes_individual_batch(j, 0.5) for j in range(1, 7)] == [True, False] * 3
    with pytest.raises(ValueError, match="whole number"):
        sample_weighing(40, 8, 4, 1, n_i=2.5, seed=0)


def test_strategy_plan_for_sample_weighing_uses_d_i_and_d_g():
    ctx = context()
    plan = make_strategy("sample_weighing", n_i=2).plan(ctx)
    assert plan.start == "scratch"
    assert plan.sources["individual"].tolist() == list(range(20))
    assert plan.sources["general"].tolist() == list(range(90, 290))
    assert [s.source for s in plan.schedule[:4]] == ["general", "individual"] * 2


def test_early_shaping_trains_exactly_n_iterations_on_d_i_first():
    ctx = context()
    plan = make_strategy("early_shaping", n=7).plan(ctx)
    sources = [step.source for step in plan.schedule]
    assert sources[:7] == ["individual"] * 7
    assert set(sources[7:]) == {"general"} and len(sources) == 7 + 50  # 200 / 4 per epoch
    # 7 batches of 4 from 20 samples: one full pass (5 batches) then a reshuffled one
    first_pass = np.concatenate([step.indices for step in plan.schedule[:5]])
    assert sorted(first_pass.tolist()) == list(range(20))


def test_transfer_learning_leaves_frozen_layers_bit_identical():
    ctx = context()
    start = ctx.global_model()
    before = {k: v.clone() for k, v in start.state_dict().items()}
    strategy = make_strategy("transfer", n=20, frozen_layers=2)
    plan = strategy.plan(ctx)
    assert plan.start == "global" and plan.frozen == layer_prefixes(start)[:2]
    assert [step.source for step in plan.schedule] == ["individual"] * 20
    tuned = execute(plan, ctx)
    after = tuned.state_dict()
    for layer in plan.frozen:
        assert torch.equal(after[f"{layer}.weight"], before[f"{layer}.weight"])
        assert torch.equal(after[f"{layer}.bias"], before[f"{layer}.bias"])
    last = layer_prefixes(start)[-1]
    assert not torch.equal(after[f"{last}.weight"], before[f"{last}.weight"])
    # the global model itself is untouched (personalization works on a copy)
    assert all(torch.equal(start.state_dict()[k], v) for k, v in before.items())


def test_last_layer_freezes_everything_but_the_classifier():
    ctx = context()
    plan = make_strategy("last_layer", n=5).plan(ctx)
    assert plan.frozen == layer_prefixes(ctx.global_model())[:-1]


def test_l2sp_pulls_weights_back_towards_the_global_model():
    ctx = context()
    start = torch.cat([p.flatten() for p in ctx.global_model().parameters()]).detach()

    def distance(alpha):
        model = execute(make_strategy("l2sp", n=60, alpha=alpha).plan(ctx), ctx)
        return float((torch.cat([p.detach().flatten() for p in model.parameters()]) - start).norm())

    assert distance(50.0) < distance(0.0)


def test_single_sample_grouping_takes_the_nearest_without_duplicates():
    # 1-d latents: queries at 0 and 10; the pool around them
    query = np.array([[0.0], [10.0]])
    pool = np.array([[0.1], [9.0], [-0.3], [0.2], [10.5], [50.0], [9.8]])
    picks = nearest_without_duplicates(query, pool, n_total=4)
    assert picks.tolist() == [0, 3, 6, 4]  # 0.1, 0.2 for query 0; 9.8, 10.5 for query 10
    # a point both queries want goes to the first; the second takes the next nearest
    shared = nearest_without_duplicates(np.array([[0.0], [0.05]]), pool, n_total=2)
    assert shared.tolist() == [0, 3]
    assert len(set(nearest_without_duplicates(query, pool, 7).tolist())) == 7


def test_single_sample_grouping_plan_extends_d_i_with_general_neighbours():
    ctx = context()
    plan = make_strategy("single_sample_grouping", n=40).plan(ctx)
    extended = plan.sources["individual"]
    assert extended[:20].tolist() == list(range(20))
    assert len(extended) == 60 and set(extended[20:].tolist()) <= set(range(90, 290))
    assert len(set(extended.tolist())) == 60


def test_individual_grouping_picks_the_most_similar_individuals():
    profiles = {
        "far": np.array([9.0, 9.0]),
        "near": np.array([1.0, 1.2]),
        "mid": np.array([3.0, 3.0]),
    }
    assert similar_individuals(np.array([1.0, 1.0]), profiles, 2) == ["near", "mid"]

    # constructed data: b's latents equal a's, c's are far away
    data = toy_data()
    latents = np.zeros((len(data.x), 2))
    latents[data.individual_train["c"]] = 100.0
    strategy = make_strategy("individual_grouping", n=1)
    assert strategy.chosen(context(data, latents)) == ["b"]
    plan = strategy.plan(context(data, latents))
    assert plan.sources["individual"].tolist() == list(range(20)) + list(range(30, 50))


def test_unknown_method_and_parameter_list_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"unknown method 'fine_tune'; valid methods: .*early_shaping"
    ):
        make_strategy("fine_tune")
    with pytest.raises(ConfigError, match="no parameter iterations; valid: n"):
        make_strategy("early_shaping", iterations=3)
    with pytest.raises(ConfigError, match="n must be a whole number"):
        make_strategy("transfer", n=-1)


def test_skip_reasons_for_too_little_data_or_a_missing_class():
    data = toy_data()
    assert data.skip_reason("a", 10, ["0"]) is None
    assert "fewer than" in data.skip_reason("a", 50, ["0"])
    data.y[data.individual_train["b"]] = 0
    assert "no '2' sample" in data.skip_reason("b", 10, ["0", "2"])


def test_robust_methods_are_transfer_plans_with_their_objective():
    ctx = context()
    ctx.perturbation = SensorError(0.2)
    adversarial = make_strategy("adversarial_finetuning", n=12).plan(ctx)
    certified = make_strategy("certified_finetuning", n=12, bound="ibp", eps=0.5).plan(ctx)
    transfer = make_strategy("transfer", n=12).plan(ctx)
    for plan in (adversarial, certified):
        assert plan.start == "global" and plan.frozen == []
        assert [s.indices.tolist() for s in plan.schedule] == [
            s.indices.tolist() for s in transfer.schedule
        ]
    assert (adversarial.robust.kind, adversarial.robust.perturbation.eps) == ("pgd", 0.2)
    assert (certified.robust.kind, certified.robust.perturbation.eps) == ("ibp", 0.5)
    scratch = make_strategy("certified_training").plan(ctx)
    assert scratch.start == "scratch" and scratch.robust.kind == "crown-ibp"
    with pytest.raises(ConfigError, match="bound must be one of ibp, crown-ibp"):
        make_strategy("certified_finetuning", bound="crown")


def test_sparse_finetuning_returns_a_physically_smaller_model():
    ctx = context()
    plan = make_strategy("sparse_finetuning", n=40, sparsity=0.7, structured=True).plan(ctx)
    assert plan.pruning.sparsity == 0.7 and plan.robust is None
    smaller = execute(plan, ctx)
    assert count_parameters(smaller) <= 0.3 * count_parameters(ctx.global_model())
    joint = make_strategy("sparse_finetuning", n=40, sparsity=0.7, certified="ibp").plan(ctx)
    assert joint.robust.kind == "ibp" and not joint.pruning.structured
    model = execute(joint, ctx)
    assert weight_sparsity(model) == pytest.approx(0.7, abs=0.01)
