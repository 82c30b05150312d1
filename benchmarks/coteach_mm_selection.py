"""Does the insulin/carb view keep a CGM fault from becoming the lesson? A diagnostic of
multi-modal co-teaching's selection (docs/generalization.md), on the SYNTHETIC cohort.

    PYTHONPATH=src .venv/bin/python benchmarks/coteach_mm_selection.py RUN_DIR \
        [--individual adult-001] [--fraction 0.02] [--drop 40]

RUN_DIR is a finished run of `experiments/coteach_mm.toml` (its cached global models are
reused). A `--fraction` of the individual's in-range D_I windows get a *consistent* CGM
fault: the last 30 min of the input read `--drop` mg/dL low (a false drop, e.g. a
compression low) and the label becomes "hypo" (the same false drop running into the
horizon, which is where the label is read). Input and label agree, so a network reading the
CGM finds these samples plausible; insulin and carbs did not change.

Both co-teaching variants (per class) then train on these data; at every step we record
which samples the returned network A learns from (its peer's small-loss picks). Printed:
the share of faulted samples among A's lessons once the forget rate has reached its final
value (the second half of training) vs their share among the batches, and the share of
faulted windows each trained model alerts on (at the policy's threshold), beside the global
model and plain transfer learning TL(n) on the same data.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tailorml.config import load_config
from tailorml.experiment.tasks import load_data, make_context
from tailorml.personalize import execute, generalize, make_strategy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--individual", default="adult-001")
    parser.add_argument("--fraction", type=float, default=0.02)
    parser.add_argument("--drop", type=float, default=40.0)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()

    config = load_config(f"{args.run_dir}/config.toml")
    data = load_data(config)
    ctx = make_context(config, data, args.run_dir, args.individual, 0)
    own = ctx.own
    classes = list(data.class_names)
    in_range, hypo = classes.index("in_range"), classes.index("hypo")
    cgm = list(data.policy.channels).index("cgm")
    rng = np.random.default_rng(0)
    candidates = own[data.y[own] == in_range]
    faulted = rng.choice(candidates, size=int(args.fraction * len(candidates)), replace=False)
    tail = max(1, 30 // data.policy.sample_minutes)
    data.x[faulted, cgm, -tail:] = np.maximum(data.x[faulted, cgm, -tail:] - args.drop, 40.0)
    data.y[faulted] = hypo
    is_faulted = np.isin(own, faulted)  # per position in the D_I source
    print(
        f"{args.individual}: {len(own)} D_I windows, {len(faulted)} faulted "
        f"({is_faulted.mean():.1%}; {len(faulted) / (data.y[own] == hypo).sum():.0%} of "
        f"the now-'hypo' windows), CGM -{args.drop:g} mg/dL over the last {tail} readings"
    )

    def alerts_on_faulted(model: torch.nn.Module) -> float:
        with torch.no_grad():
            probabilities = torch.softmax(model(torch.as_tensor(data.x[faulted])), 1).numpy()
        return float(data.policy.alerting(probabilities).mean())

    print(f"{'global model':14s} alerts on {alerts_on_faulted(ctx.global_model()):.0%} of them")
    transfer = execute(make_strategy("transfer", n=args.n).plan(ctx), ctx)
    print(f"{'transfer':14s} alerts on {alerts_on_faulted(transfer):.0%} of them")
    original = generalize.small_loss_per_class
    for name in ("coteaching", "coteaching_mm"):
        plan = make_strategy(name, n=args.n, forget_rate=0.2, per_class=True).plan(ctx)
        calls: list[torch.Tensor] = []

        def recording(losses, y, rate, calls=calls):
            chosen = original(losses, y, rate)
            calls.append(chosen)
            return chosen

        generalize.small_loss_per_class = recording
        start = time.perf_counter()
        try:
            model = execute(plan, ctx)
        finally:
            generalize.small_loss_per_class = original
        seconds = time.perf_counter() - start
        lessons, seen, genuine_kept, genuine_seen = [], [], 0, 0
        half = len(plan.schedule) // 2
        own_hypo = (data.y[own] == hypo) & ~is_faulted
        for step, batch in enumerate(plan.schedule, start=1):
            for_me = calls[2 * (step - 1) + 1]  # second call of a step: A's lessons
            if step > half:
                lessons.append(is_faulted[batch.indices[for_me.numpy()]])
                seen.append(is_faulted[batch.indices])
                genuine_kept += own_hypo[batch.indices[for_me.numpy()]].sum()
                genuine_seen += own_hypo[batch.indices].sum()
        lessons, seen = np.concatenate(lessons), np.concatenate(seen)
        called_hypo = alerts_on_faulted(model)
        print(
            f"{name:14s} faulted share: batches {seen.mean():.3f}, A's lessons "
            f"{lessons.mean():.3f} (kept {lessons.sum() / seen.sum():.0%} of the faulted "
            f"samples seen, {genuine_kept / genuine_seen:.0%} of the genuine hypo ones); "
            f"alerts on {called_hypo:.0%} of them ({seconds:.0f} s)"
        )


if __name__ == "__main__":
    main()
