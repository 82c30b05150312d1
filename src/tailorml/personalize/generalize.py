"""Personalization that keeps what generalizes (seed 001, Aim 1), as plans over the one loop.

- FD(n, weight), feature distillation: fine-tune the global model on D_I (n batches) while,
  on n interleaved D_G batches, pulling the network's penultimate features towards the global
  model's (mean squared error): the generic features stay, the decision adapts. A
  feature-level relative of contrastive adaptation, without negatives (an assumption of
  ours; the seed names contrastive learning, not a recipe).
- CoTeach(n, forget_rate), co-teaching (Han et al., NeurIPS 2018): two networks, both
  starting from the global model, fine-tune on D_I; each batch, each network keeps the
  (1 - rate) fraction of samples with the smallest loss and its *peer* learns from them
  (rate ramps from 0 to forget_rate over the first half). Samples that both find hard (noisy
  labels, sensor artefacts) are learned last or not at all. The peer is trained inside the
  plugin on the loop's batches; the returned model is the first network. With a rare class
  (hypo windows) the plain selection drops that class wholesale and the model stops alerting
  (measured: docs/generalization.md); `per_class=True` keeps the small-loss fraction within
  each class instead.
- CoTeachMM(n, forget_rate, per_class), multi-modal co-teaching (seed 001, Aim 1: "dynamic
  co-teaching that uses co-dependencies of multi-modal signals to recover from noise and
  sensor errors"): the same exchange, but the two networks read different *views* of the
  same window. Network A is the returned model with every channel of the policy (cgm and
  iob/cob, or insulin/cho); its peer B is a copy of the global model whose CGM channel is
  masked (held at its D_G mean, i.e. 0 after the model's normalisation), so B reads the
  insulin/carb view only. A learns from the samples B finds small-loss, B from A's.
  Why A has all channels and B is the non-CGM view (rather than A = CGM only): the returned
  model must be the predefined model unchanged in shape and policy (alerts, gates, ONNX,
  the C header need no change), a CGM-only A would discard the insulin/carb inputs the
  predefined model was built with, and what makes the exchange multi-modal is that the
  network choosing A's lessons does not read the CGM at all. Labels are CGM-derived (the
  next 30 min below 70 mg/dL), so in single-modal co-teaching both peers read the same
  sensor that wrote the label: a fault that shapes input and label alike (a false drop
  running into the horizon: low readings, "hypo" label) is an *easy* sample for both and
  becomes the lesson. The insulin/carb view has no such fault: it finds that sample hard
  and withholds it from A. A fault in the label only is hard for both and withheld, as in
  single-modal co-teaching. A fault in the CGM input only, with a true label (high loss for
  A, low for B), is the sample a CGM fault produces: B passes it to A, which is taught the
  true label against a misleading CGM, i.e. to weigh insulin/carb against an implausible
  trace, not to follow the fault; A does not pass it to B (A's loss is large). B itself is
  never returned. Needs a non-CGM channel in `task.channels` (refuses otherwise); always
  per class by default, as plain selection drops the rare hypo windows.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from tailorml.models.schedule import Step, iterations
from tailorml.models.train import LoopPlugin
from tailorml.personalize.base import Context, Plan, Strategy


def interleave(first: list[Step], second: list[Step]) -> list[Step]:
    """first[0], second[0], first[1], second[1], ... (the rest of the longer list last)."""
    out: list[Step] = []
    for index in range(max(len(first), len(second))):
        out += first[index : index + 1] + second[index : index + 1]
    return out


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The hidden features before the classifier of a SmallCNN (head = flatten, linear, relu,
    linear)."""
    if not (hasattr(model, "features") and hasattr(model, "head")):
        raise ValueError("feature distillation needs a SmallCNN (features + head)")
    return model.head[:-1](model.features(model.normalize(x)))


class FeatureDistillation(LoopPlugin):
    """On steps from `source`, the batch loss is weight x MSE(features, teacher features)."""

    def __init__(
        self, teacher: nn.Module, schedule: list[Step], weight: float, source: str = "general"
    ) -> None:
        self.teacher = copy.deepcopy(teacher).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.sources = [step.source for step in schedule]
        self.weight, self.source = weight, source

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> torch.Tensor | None:
        if self.sources[step - 1] != self.source:
            return None
        with torch.no_grad():
            target = penultimate(self.teacher, x)
        return self.weight * F.mse_loss(penultimate(model, x), target)


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


class FeatureDistilledTransfer(Strategy):
    name = "feature_distillation"
    label = "FD"

    def __init__(self, n: int = 300, weight: float = 1.0) -> None:
        self.n = _positive("n", n)
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.weight = weight

    def plan(self, context: Context) -> Plan:
        own, general, batch = context.own, context.general, context.budget.batch_size
        schedule = interleave(
            iterations("individual", len(own), batch, self.n, context.seed),
            iterations("general", len(general), batch, self.n, context.seed + 1),
        )
        weight = self.weight
        return Plan(
            start="global",
            sources={"individual": own, "general": general},
            schedule=schedule,
            plugins=[lambda model, ctx: FeatureDistillation(ctx.global_model(), schedule, weight)],
        )


def forget_rate_at(step: int, total: int, forget_rate: float, ramp: float = 0.5) -> float:
    """Co-teaching's schedule: 0 at the start, rising linearly to `forget_rate` at
    `ramp` x total steps, then constant."""
    ramp_steps = max(1, math.ceil(ramp * total))
    return forget_rate * min(1.0, step / ramp_steps)


def small_loss(losses: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` smallest losses (ties: the earlier sample)."""
    return torch.argsort(losses, stable=True)[:keep]


def small_loss_per_class(losses: torch.Tensor, y: torch.Tensor, rate: float) -> torch.Tensor:
    """The (1 - rate) smallest-loss fraction *of each class* (at least one per class present):
    a rare class (hypo windows) is never dropped wholesale for being harder on average."""
    chosen = []
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        keep = max(1, math.ceil((1.0 - rate) * len(members)))
        chosen.append(members[small_loss(losses[members], keep)])
    return torch.sort(torch.cat(chosen)).values


class CoTeaching(LoopPlugin):
    """The peer network and its optimiser; each batch exchanges small-loss samples."""

    def __init__(
        self,
        peer: nn.Module,
        total: int,
        forget_rate: float,
        learning_rate: float,
        class_weights: torch.Tensor | None = None,
        seed: int = 0,
        per_class: bool = False,
    ) -> None:
        torch.manual_seed(seed + 1)
        self.per_class = per_class
        self.peer = copy.deepcopy(peer).train()
        self.optimizer = torch.optim.Adam(self.peer.parameters(), lr=learning_rate)
        self.total, self.forget_rate, self.class_weights = total, forget_rate, class_weights

    def _losses(self, network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(network(x), y, weight=self.class_weights, reduction="none")

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> torch.Tensor | None:
        rate = forget_rate_at(step, self.total, self.forget_rate)
        mine = self._losses(model, x, y)
        theirs = self._losses(self.peer, x, y)
        if self.per_class:
            for_peer = small_loss_per_class(mine.detach(), y, rate)
            for_me = small_loss_per_class(theirs.detach(), y, rate)
        else:
            keep = max(1, math.ceil((1.0 - rate) * len(y)))
            for_peer = small_loss(mine.detach(), keep)
            for_me = small_loss(theirs.detach(), keep)
        self.optimizer.zero_grad(set_to_none=True)
        theirs[for_peer].mean().backward()
        self.optimizer.step()
        return mine[for_me].mean()


class ChannelView(nn.Module):
    """`network` reading only the input channels `keep` (indices): every other channel is
    held at the network's normalisation mean (0 after normalising), i.e. "no information"
    rather than "zero readings" (0 mg/dL would be a severe low)."""

    def __init__(self, network: nn.Module, keep: list[int], n_channels: int) -> None:
        super().__init__()
        if not keep or any(not 0 <= k < n_channels for k in keep):
            raise ValueError(f"a view needs channels among 0..{n_channels - 1}, got {keep}")
        self.network = network
        self.keep = sorted(keep)
        self.masked = [k for k in range(n_channels) if k not in self.keep]
        mean = getattr(getattr(network, "normalize", None), "mean", None)
        if mean is None:  # 0 would read as 0 mg/dL: never fill in a guess
            raise ValueError("a channel view needs a network with an input normalisation mean")
        fill = mean.detach().flatten()
        if len(fill) == 1:  # one mean for every channel
            fill = fill.expand(n_channels)
        self.register_buffer("fill", fill.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.masked:
            x = x.clone()
            shape = (1, len(self.masked)) + (1,) * (x.dim() - 2)
            x[:, self.masked] = self.fill[self.masked].reshape(shape)
        return self.network(x)


def views(channels: tuple[str, ...] | list[str]) -> tuple[list[int], list[int]]:
    """(CGM view, insulin/carb view) as channel indices of a policy's `channels`."""
    channels = list(channels)
    if "cgm" not in channels:
        raise ValueError(f"multi-modal co-teaching needs a cgm channel, got {channels}")
    other = [k for k, name in enumerate(channels) if name != "cgm"]
    if not other:
        raise ValueError(
            f"multi-modal co-teaching needs an insulin/carb view but the model reads only "
            f'{channels}; set task.channels = ["cgm", "iob", "cob"] (or insulin/cho)'
        )
    return [channels.index("cgm")], other


class CoTeachingTransfer(Strategy):
    name = "coteaching"
    label = "CoTeach"

    def __init__(self, n: int = 300, forget_rate: float = 0.2, per_class: bool = False) -> None:
        self.n = _positive("n", n)
        if not 0 <= forget_rate < 1:
            raise ValueError(f"forget_rate must be in [0, 1), got {forget_rate}")
        if not isinstance(per_class, bool):
            raise ValueError(f"per_class must be true or false, got {per_class!r}")
        self.forget_rate = forget_rate
        self.per_class = per_class

    def plan(self, context: Context) -> Plan:
        own = context.own
        n, rate, per_class = self.n, self.forget_rate, self.per_class
        learning_rate = context.budget.finetune_learning_rate
        weights = context.budget.class_weights
        return Plan(
            start="global",
            sources={"individual": own},
            schedule=iterations("individual", len(own), context.budget.batch_size, n, context.seed),
            plugins=[
                lambda model, ctx: CoTeaching(
                    ctx.global_model(), n, rate, learning_rate, weights, ctx.seed, per_class
                )
            ],
        )


class MultiModalCoTeaching(CoTeachingTransfer):
    name = "coteaching_mm"
    label = "CoTeachMM"

    def __init__(self, n: int = 300, forget_rate: float = 0.2, per_class: bool = True) -> None:
        super().__init__(n, forget_rate, per_class)  # per class by default: hypo is rare

    def check_inputs(self, channels: tuple[str, ...]) -> None:
        views(channels)

    def plan(self, context: Context) -> Plan:
        channels = context.data.policy.channels
        _, other = views(channels)  # refuses a CGM-only model before anything trains
        own = context.own
        n, rate, per_class = self.n, self.forget_rate, self.per_class
        learning_rate = context.budget.finetune_learning_rate
        weights = context.budget.class_weights

        def peer(model: nn.Module, ctx: Context) -> CoTeaching:
            insulin_carb = ChannelView(copy.deepcopy(ctx.global_model()), other, len(channels))
            return CoTeaching(insulin_carb, n, rate, learning_rate, weights, ctx.seed, per_class)

        return Plan(
            start="global",
            sources={"individual": own},
            schedule=iterations("individual", len(own), context.budget.batch_size, n, context.seed),
            plugins=[peer],
        )
