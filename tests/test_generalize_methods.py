"""Feature distillation, co-teaching and group DRO: their schedules and objectives on toy
data where the answer is known."""

import numpy as np
import pytest
import torch

from tailorml.config import ModelConfig
from tailorml.models.cnn import build_model
from tailorml.models.schedule import Step
from tailorml.models.spec import Standardize
from tailorml.personalize import execute, make_strategy
from tailorml.personalize.base import Budget, Context
from tailorml.personalize.dataset import PersonalData
from tailorml.personalize.fair import GroupDRO, sample_groups
from tailorml.personalize.generalize import (
    ChannelView,
    CoTeaching,
    forget_rate_at,
    interleave,
    penultimate,
    small_loss,
    small_loss_per_class,
    views,
)
from tailorml.policy import AlertPolicy
from tailorml.recipe import Recipe

LENGTH = 8


def toy_data() -> PersonalData:
    """a, b (group g1) and c (group g2): 20 train + 10 test samples each; 200 general."""
    rng = np.random.default_rng(0)
    n = 3 * 30 + 200
    x = rng.normal(size=(n, 1, LENGTH)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64)
    ids = ["a", "b", "c"]
    return PersonalData(
        name="toy",
        x=x,
        y=y,
        ids=ids,
        groups={"a": "g1", "b": "g1", "c": "g2"},
        individual_train={k: np.arange(30 * i, 30 * i + 20) for i, k in enumerate(ids)},
        individual_test={k: np.arange(30 * i + 20, 30 * i + 30) for i, k in enumerate(ids)},
        class_names=["0", "1"],
        dims=1,
        synthetic=True,
        policy=AlertPolicy.argmax(["0", "1"]),
        shared_general=np.arange(90, 290),
        shared_general_test=np.arange(90, 100),
    )


def new_model():
    torch.manual_seed(0)
    config = ModelConfig(conv_channels=[4, 4], kernel_size=3, hidden=8)
    return build_model(config, 1, LENGTH, 2, torch.zeros(1), torch.ones(1))


def context() -> Context:
    data, trained = toy_data(), new_model()
    return Context(
        data=data,
        individual="a",
        seed=0,
        budget=Budget(Recipe(1, 4, 2e-3, 0.0, "balanced"), finetune_learning_rate=5e-2),
        new_model=new_model,
        global_model=lambda: trained,
        latents=lambda: data.x[:, 0, :2],
    )


def test_interleave_alternates_and_keeps_the_rest():
    first = [Step("i", np.array([k])) for k in range(3)]
    second = [Step("g", np.array([k])) for k in range(1)]
    assert [s.source for s in interleave(first, second)] == ["i", "g", "i", "i"]


def test_feature_distillation_plan_alternates_d_i_and_d_g_from_the_global_model():
    plan = make_strategy("feature_distillation", n=5).plan(context())
    assert plan.start == "global"
    assert [s.source for s in plan.schedule] == ["individual", "general"] * 5
    assert len(plan.plugins) == 1


def test_feature_distillation_keeps_general_features_closer_than_plain_transfer():
    ctx = context()
    general = torch.as_tensor(ctx.data.x[ctx.general])
    start = penultimate(ctx.global_model(), general).detach()

    def moved(name, **params):
        model = execute(make_strategy(name, **params).plan(ctx), ctx)
        return float((penultimate(model, general).detach() - start).norm())

    # same D_I steps; FD's D_G steps pull the features back (weight 50: strongly)
    assert moved("feature_distillation", n=40, weight=50.0) < moved("transfer", n=40)


def test_coteaching_forget_rate_ramps_linearly_then_stays():
    # 100 steps, ramp over the first half: 0 -> 0.2 at step 50, constant after
    assert forget_rate_at(0, 100, 0.2) == 0.0
    assert forget_rate_at(25, 100, 0.2) == pytest.approx(0.1)
    assert forget_rate_at(50, 100, 0.2) == pytest.approx(0.2)
    assert forget_rate_at(90, 100, 0.2) == pytest.approx(0.2)


def test_small_loss_selection_keeps_the_smallest():
    losses = torch.tensor([0.9, 0.1, 0.5, 0.1, 2.0])
    assert small_loss(losses, 3).tolist() == [1, 3, 2]


def test_coteaching_trains_and_leaves_the_global_model_untouched():
    ctx = context()
    before = {k: v.clone() for k, v in ctx.global_model().state_dict().items()}
    model = execute(make_strategy("coteaching", n=10, forget_rate=0.5).plan(ctx), ctx)
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(torch.equal(ctx.global_model().state_dict()[k], v) for k, v in before.items())


def test_sample_groups_maps_every_owned_sample():
    codes = sample_groups(context().data)
    assert (codes[:60] == 0).all() and (codes[60:90] == 1).all()  # g1: a, b; g2: c
    assert (codes[90:] == -1).all()  # shared general data has no owner here


def test_group_dro_moves_weight_to_the_group_with_the_larger_loss():
    # a model that is always right on group 0 and always wrong on group 1
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.where(
                x[:, :1] > 0, torch.tensor([[5.0, -5.0]]), torch.tensor([[-5.0, 5.0]])
            )

    codes = np.array([0, 0, 1, 1])
    schedule = [Step("union", np.arange(4))] * 3
    dro = GroupDRO(codes, schedule, eta=1.0)
    x = torch.tensor([[1.0], [1.0], [1.0], [1.0]])
    y = torch.tensor([0, 0, 1, 1])  # group 0 right (loss ~0), group 1 wrong (loss ~10)
    for step in (1, 2, 3):
        dro.batch_loss(Fixed(), x, y, step)
    assert dro.q[1] > 0.99 and dro.q.sum() == pytest.approx(1.0)


def test_group_dro_needs_two_groups():
    ctx = context()
    ctx.data.groups = dict.fromkeys(ctx.data.groups, "g")
    with pytest.raises(ValueError, match="two groups"):
        make_strategy("group_dro").plan(ctx)


def test_per_class_selection_keeps_the_rare_class():
    losses = torch.tensor([0.1, 0.9, 0.2, 0.8])
    y = torch.tensor([0, 1, 0, 1])
    # plain: the two smallest losses are both class 0; per class: half of each class
    assert small_loss(losses, 2).tolist() == [0, 2]
    assert small_loss_per_class(losses, y, 0.5).tolist() == [0, 3]


# -- multi-modal co-teaching ---------------------------------------------------------------


def multimodal_context(channels=("cgm", "iob", "cob")) -> Context:
    """The toy task with three input channels: the label follows the first reading of the
    CGM channel."""
    ctx = context()
    rng = np.random.default_rng(1)
    data = ctx.data
    data.x = rng.normal(size=(len(data.y), len(channels), LENGTH)).astype(np.float32)
    data.y = (data.x[:, 0, 0] > 0).astype(np.int64)
    data.policy = AlertPolicy(classes=("0", "1"), alert_class="1", channels=tuple(channels))
    torch.manual_seed(0)
    config = ModelConfig(conv_channels=[4, 4], kernel_size=3, hidden=8)
    mean = torch.tensor([100.0, 2.0, 10.0][: len(channels)])
    trained = build_model(config, len(channels), LENGTH, 2, mean, torch.ones(len(channels)))
    trained.policy = data.policy
    ctx.global_model = lambda: trained
    return ctx


def test_views_split_cgm_from_insulin_and_carbs():
    assert views(["cgm", "iob", "cob"]) == ([0], [1, 2])
    assert views(["insulin", "cgm", "cho"]) == ([1], [0, 2])
    with pytest.raises(ValueError, match="insulin/carb view"):
        views(["cgm"])


def test_channel_view_holds_the_other_channels_at_their_mean():
    seen = []

    class Record(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.normalize = Standardize(torch.tensor([100.0, 2.0, 10.0]), torch.ones(3))

        def forward(self, x):
            seen.append(x)
            return x.sum(dim=(1, 2))

    x = torch.arange(12.0).reshape(1, 3, 4)
    ChannelView(Record(), [1, 2], 3)(x)
    # the CGM channel reads its mean (100 mg/dL: no information), the others are untouched
    assert seen[0][0, 0].tolist() == [100.0] * 4
    assert torch.equal(seen[0][0, 1:], x[0, 1:])
    assert x[0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]  # the caller's batch is not changed


def test_peer_output_does_not_depend_on_the_cgm():
    ctx = multimodal_context()
    plan = make_strategy("coteaching_mm", n=2).plan(ctx)
    peer = plan.plugins[0](ctx.global_model(), ctx).peer
    x = torch.as_tensor(ctx.data.x[:16])
    faulted = x.clone()
    faulted[:, 0] += 80.0  # a +80 mg/dL CGM fault
    assert torch.equal(peer(x), peer(faulted))
    changed = x.clone()
    changed[:, 1] += 1.0  # the insulin view does reach it
    assert not torch.equal(peer(x), peer(changed))


def test_multimodal_exchange_gives_each_network_the_other_views_small_losses():
    # A (full model) finds sample 1 easy, B (insulin/carb view) finds it hard: the pattern of a
    # fault that shapes CGM input and label alike. Per class at rate 0.5, A learns from B's
    # picks (1 of each class: 0 and 3) and B from A's (1 and 2).
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor(logits))

        def forward(self, x):
            return self.logits

    y = torch.tensor([0, 0, 1, 1])
    a = Fixed([[2.0, 0.0], [5.0, 0.0], [0.0, 4.0], [0.0, 1.0]])  # losses: 0.13 0.01 0.02 0.31
    b = Fixed([[3.0, 0.0], [-3.0, 0.0], [0.0, -1.0], [0.0, 3.0]])  # 0.05 3.05 1.31 0.05

    coteach = CoTeaching(b, 100, 0.5, 0.0, per_class=True)  # learning rate 0: B stays put
    loss = coteach.batch_loss(a, torch.zeros(4, 1), y, step=100)
    losses = torch.nn.functional.cross_entropy(a.logits, y, reduction="none")
    assert loss.item() == pytest.approx(losses[[0, 3]].mean().item())
    # B's gradient reaches exactly the samples A picked for it
    assert (coteach.peer.logits.grad.abs().sum(1) > 0).tolist() == [False, True, True, False]


def test_coteaching_mm_returns_an_ordinary_model_with_the_policys_channels():
    ctx = multimodal_context()
    before = {k: v.clone() for k, v in ctx.global_model().state_dict().items()}
    model = execute(make_strategy("coteaching_mm", n=10, forget_rate=0.5).plan(ctx), ctx)
    assert type(model) is type(ctx.global_model())
    assert model.state_dict().keys() == before.keys()  # no view wrapper, no masked input
    assert model.policy.channels == ("cgm", "iob", "cob")
    assert model(torch.as_tensor(ctx.data.x[:4])).shape == (4, 2)
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in before.items())
    # the CGM still matters to the returned model (it was never masked)
    x = torch.as_tensor(ctx.data.x[:16])
    faulted = x.clone()
    faulted[:, 0] += 80.0
    assert not torch.equal(model(x), model(faulted))
    assert all(torch.equal(ctx.global_model().state_dict()[k], v) for k, v in before.items())


def test_coteaching_mm_refuses_a_cgm_only_model():
    with pytest.raises(ValueError, match=r"task\.channels"):
        make_strategy("coteaching_mm").plan(multimodal_context(("cgm",)))


# -- adaptation by need ----------------------------------------------------------------------


def balanced_accuracy_by_hand(y, decided):
    recalls = [np.mean(decided[y == c] == c) for c in np.unique(y)]
    return float(np.mean(recalls))


def test_by_need_measures_the_global_model_on_the_individuals_own_training_windows():
    ctx = context()
    own = ctx.own
    with torch.no_grad():
        decided = ctx.global_model()(torch.from_numpy(ctx.data.x[own])).argmax(1).numpy()
    expected = balanced_accuracy_by_hand(ctx.data.y[own], decided)
    assert make_strategy("by_need").served(ctx) == pytest.approx(expected)


def test_by_need_keeps_the_global_model_for_the_well_served_and_adapts_the_others():
    ctx = context()
    served = make_strategy("by_need").served(ctx)
    # served exactly at the target: no need, the global model unchanged
    kept = make_strategy("by_need", n=5, target=served, base="transfer")
    assert kept.plan(ctx).schedule == []
    model = execute(kept.plan(ctx), ctx)
    state = ctx.global_model().state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # served below the target: the base method's plan, step for step
    adapted = make_strategy("by_need", n=5, target=min(1.0, served + 0.01), base="transfer")
    base = make_strategy("transfer", n=5).plan(ctx)
    plan = adapted.plan(ctx)
    assert plan.start == "global" and len(plan.schedule) == len(base.schedule) == 5
    pairs = zip(plan.schedule, base.schedule, strict=True)
    assert all(np.array_equal(a.indices, b.indices) for a, b in pairs)


def test_by_need_refuses_bad_settings():
    with pytest.raises(ValueError, match="base must be one of"):
        make_strategy("by_need", base="coteaching")
    with pytest.raises(ValueError, match="target must be a balanced accuracy"):
        make_strategy("by_need", target=0.0)
