"""One decision step of the ``default`` scenario: the learner against the bare arithmetic.

A decision step is ``optimizer_steps`` Adam steps on a batch of cached inputs plus one
held-out evaluation. The "bare" loop does the same tensor work written inline (the
batch gather, the low-rank forward, cross-entropy, backward, a fused Adam step, the
held-out forward) with none of the learner's bookkeeping, so the ratio is the learner's
own overhead. Both run on one core, interleaved in blocks, in this one process.

    python benchmarks/decision_step.py [--steps 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine_line
from torch.nn import functional as F

from nsr_env.learner import FRESH
from nsr_env.scenarios import prepare


def bare_step_factory(data, seed: int):
    """The decision step's arithmetic, inline, for task 0 in a fresh rank-r slot."""
    scenario, task = data.scenario, data.tasks[0]
    generator = torch.Generator().manual_seed(seed)
    in_features, out_features = task.train_inputs.shape[2], task.train_base.shape[2]
    A = (torch.rand(scenario.rank, in_features, generator=generator) * 2 - 1).div_(in_features**0.5)
    B = torch.zeros(out_features, scenario.rank)
    weight = torch.zeros(task.num_classes, out_features)
    bias = torch.zeros(task.num_classes)
    parameters = [t.requires_grad_() for t in (A, B, weight, bias)]
    optimizer = torch.optim.Adam(parameters, lr=scenario.lr, fused=True)
    subset = torch.randperm(len(task.eval_labels), generator=torch.Generator().manual_seed(0))[:200]
    eval_inputs, eval_base, eval_labels = task.eval_inputs[subset], task.eval_base[subset], task.eval_labels[subset]
    positions = task.train_inputs.shape[1]

    def features(inputs, base):
        low = inputs.reshape(-1, in_features) @ A.T
        out = torch.addmm(base.reshape(-1, out_features), low, B.T)
        return F.relu6(out.view(-1, positions, out_features), inplace=True).mean(1)

    def step() -> float:
        for _ in range(scenario.optimizer_steps):
            batch = torch.randint(len(task.train_labels), (scenario.batch_size,), generator=generator)
            logits = features(task.train_inputs[batch], task.train_base[batch]) @ weight.T + bias
            loss = F.cross_entropy(logits, task.train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return (
                (torch.addmm(bias, features(eval_inputs, eval_base), weight.T).argmax(1) == eval_labels).float().mean()
            )

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="decision steps timed per contender")
    parser.add_argument("--block", type=int, default=50, help="steps per timed block (blocks alternate)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = prepare("default", progress=False)
    learner = data.learner(seed=0)
    learner.begin_phase(0, 0, FRESH)
    bare = bare_step_factory(data, seed=0)
    for _ in range(20):  # warm-up: first-call allocations, lazy imports
        learner.decision_step()
        bare()
    times: dict[str, list[float]] = {"learner": [], "bare": []}
    contenders = {"learner": learner.decision_step, "bare": bare}
    for _ in range(args.steps // args.block):
        for name, step in contenders.items():
            started = time.perf_counter()
            for _ in range(args.block):
                step()
            times[name].append((time.perf_counter() - started) / args.block * 1e3)
    median = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}  # the least disturbed block: a noisy host slows only
    scenario = data.scenario
    print(machine_line())
    print(
        f"default decision step: {scenario.optimizer_steps} Adam step(s) of batch {scenario.batch_size}, rank "
        f"{scenario.rank}, + held-out evaluation of {learner.config.eval_size} samples"
    )
    for name in ("learner", "bare"):
        print(
            f"{name}: median {median[name]:.3f} ms/step = {1e3 / median[name]:.0f} steps/s; "
            f"best block {best[name]:.3f} ms/step = {1e3 / best[name]:.0f} steps/s"
        )
    rate, ratio = 1e3 / median["learner"], median["learner"] / median["bare"]
    print(f"target >= 500 decision steps/s on one core (median): {'met' if rate >= 500 else 'NOT met'} ({rate:.0f}/s)")
    print(f"ratio learner / bare: {ratio:.2f} (target <= 3: {'met' if ratio <= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
