"""Batched environment and leaner decision step on ``default``: steps per second against the floor.

One process, one torch thread, every ratio from contenders run in turns in this run:
1. the single environment's step on the decision step it replaced (autograd through the
   layer and one fused torch Adam per phase, kept here as :class:`PreviousLearner`) against
   today's (one hand-written backward node, a batched Adam over rows);
2. the batched environment (``gym.make_vec(..., num_envs=N)``), aggregate steps/s, against
   the single one; every sub-environment gets random valid actions;
3. MaskablePPO training steps/s on one single environment against ``--vector N``
   (:func:`agents.vec_env.make_batched`), with the recipe's ``n_steps`` and batch size;
4. the arithmetic floor of one decision step: the bytes it must move and the FLOPs it must do,
   against this machine's measured copy bandwidth and matrix-product rate.

    python benchmarks/vector_env.py [--num-envs 16] [--steps 400] [--ppo-steps 8192]
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from machine import machine_line
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_util import make_vec_env
from torch.nn import functional as F

import nsr_env  # noqa: F401  (registers the ids)
from agents.ppo import RECIPE
from agents.vec_env import make_batched
from nsr_env.envs.nsr import NSREnv
from nsr_env.learner import ContinualLearner, TrainingDivergedError
from nsr_env.prepared import ScenarioData
from nsr_env.records import PhaseParameters, StepResult


class PreviousLearner(ContinualLearner):
    """The decision step before the batched one: autograd through the adapted layer, one fused torch Adam per
    phase on its own leaf copies of the parameters (the baseline of the single-step target)."""

    def begin_phase(self, task, slot, recall) -> None:
        super().begin_phase(task, slot, recall)
        self.leaves = PhaseParameters(*(t.clone().requires_grad_() for t in self.phase_parameters()))
        self.optimizer = torch.optim.Adam(self.leaves, lr=self.config.lr, fused=True)

    def decision_step(self) -> StepResult:
        phase, config = self.phase, self.config
        data = self.tasks[phase.task]
        A, B, weight, bias = self.leaves
        for _ in range(config.optimizer_steps):
            batch = torch.randint(len(data.train_labels), (config.batch_size,), generator=self.generator)
            features = self._features(data.train_inputs[batch], data.train_base[batch], A, B)
            loss = F.cross_entropy(features @ weight.T + bias, data.train_labels[batch])
            loss = self.protection.loss(loss, features, batch, self.leaves)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"task {data.name}: loss {loss.item()}")
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                self.protection.after_step(self.leaves)
        with torch.no_grad():
            for row, leaf in zip(self.phase_parameters(), self.leaves, strict=True):
                row.copy_(leaf)
        self.close_step()
        return StepResult(self.evaluate(phase.task).accuracy, loss.item())


class PreviousData(ScenarioData):
    def learner(self, seed: int = 0) -> ContinualLearner:
        return PreviousLearner(self.tasks, self.pool_kind, self.scenario.learner_config(), seed=seed)


def random_valid(masks: np.ndarray, slots: int, rng: np.random.Generator) -> np.ndarray:
    """One random valid [slot, recall] per row of ``masks``."""
    return np.array([[rng.choice(np.flatnonzero(m[:slots])), rng.choice(np.flatnonzero(m[slots:]))] for m in masks])


def single_rate(env: NSREnv, steps: int, seed: int = 0) -> float:
    """Steps per second of one environment under random valid actions (the time in ``step`` and ``reset`` only,
    not the choice of actions)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    slots = env.action_space.nvec[0]
    seconds = 0.0
    for _ in range(steps):
        action = random_valid(env.action_masks()[None], slots, rng)[0]
        started = time.perf_counter()
        _, _, terminated, _, _ = env.step(action)
        if terminated:
            env.reset()
        seconds += time.perf_counter() - started
    return steps / seconds


def batched_rate(venv, steps: int, seed: int = 0) -> float:
    """Aggregate steps per second of the batched environment (all sub-environments) under random valid actions
    (the time in ``step`` only; it resets finished episodes itself)."""
    rng = np.random.default_rng(seed)
    venv.reset(seed=seed)
    slots = venv.single_action_space.nvec[0]
    seconds = 0.0
    for _ in range(steps):
        actions = random_valid(venv.action_masks(), slots, rng)
        started = time.perf_counter()
        venv.step(actions)
        seconds += time.perf_counter() - started
    return steps * venv.num_envs / seconds


def ppo_rate(env, steps: int) -> float:
    model = MaskablePPO("MlpPolicy", env, n_steps=RECIPE["n_steps"], batch_size=RECIPE["batch_size"], seed=0,
                        device="cpu")  # fmt: skip
    started = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - started)


def machine_rates() -> tuple[float, float]:
    """This core's copy bandwidth (bytes/s, read + write of 64 MB) and float32 matrix-product rate (FLOP/s)."""
    source, target = torch.rand(1 << 24), torch.empty(1 << 24)
    a, b = torch.rand(512, 512), torch.rand(512, 512)
    copies, products = [], []
    for _ in range(5):
        started = time.perf_counter()
        target.copy_(source)
        copies.append(time.perf_counter() - started)
        started = time.perf_counter()
        a @ b
        products.append(time.perf_counter() - started)
    return 2 * source.numel() * 4 / min(copies), 2 * 512**3 / min(products)


def floor(data: ScenarioData) -> tuple[float, float]:
    """Bytes one decision step must move and FLOPs it must do (float32): read the batch's cached inputs and
    frozen outputs and the held-out set's once, and the low-rank products forward and backward."""
    scenario, task = data.scenario, data.tasks[0]
    _, positions, in_features = task.train_inputs.shape
    out_features, rank = task.train_base.shape[2], scenario.rank
    train_rows = scenario.optimizer_steps * scenario.batch_size * positions
    eval_rows = scenario.eval_size * positions
    moved = 4 * (train_rows + eval_rows) * (in_features + out_features)
    low_rank = 2 * rank * (in_features + out_features)  # FLOPs per row through x A^T then B
    flops = eval_rows * low_rank + train_rows * 3 * low_rank  # backward: twice the forward
    return moved, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=400, help="steps timed per contender and turn")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--ppo-steps", type=int, default=8192)
    args = parser.parse_args()
    torch.set_num_threads(1)
    today = gym.make("nsr_env/NSR-v0").unwrapped
    data = today.data
    previous = NSREnv(data.scenario, data=PreviousData(**{f: getattr(data, f) for f in data.__dataclass_fields__}))
    venv = gym.make_vec("nsr_env/NSR-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point")
    contenders = {
        "single, previous step": lambda: single_rate(previous, args.steps),
        "single, today's step": lambda: single_rate(today, args.steps),
        f"batched, N={args.num_envs}": lambda: batched_rate(venv, args.steps // args.num_envs * 4),
    }
    for run in contenders.values():
        run()  # warm-up
    rates = {name: [] for name in contenders}
    for _ in range(args.turns):
        for name, run in contenders.items():
            rates[name].append(run())
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(machine_line())
    print(f"default, random valid actions; median of {args.turns} turns")
    for name, rate in median.items():
        print(f"{name}: {rate:.0f} steps/s = {1e3 / rate:.3f} ms/step")
    single, batched = median["single, today's step"], median[f"batched, N={args.num_envs}"]
    leaner = single / median["single, previous step"]
    print(f"single step, today's / previous: {leaner:.2f}x (target >= 1.5: {'met' if leaner >= 1.5 else 'NOT met'})")
    gain = batched / single
    print(f"batched N={args.num_envs} / single: {gain:.2f}x (target >= 6: {'met' if gain >= 6 else 'NOT met'})")
    bandwidth, product_rate = machine_rates()
    moved, flops = floor(data)
    floor_ms = max(moved / bandwidth, flops / product_rate) * 1e3
    print(
        f"floor of one decision step: {moved / 1e6:.2f} MB moved at {bandwidth / 1e9:.1f} GB/s = "
        f"{moved / bandwidth * 1e3:.3f} ms; {flops / 1e6:.1f} MFLOP at {product_rate / 1e9:.0f} GFLOP/s = "
        f"{flops / product_rate * 1e3:.3f} ms; so >= {floor_ms:.3f} ms/step = {1e3 / floor_ms:.0f} steps/s"
    )
    for name, rate in median.items():
        print(f"  {name}: {1e3 / rate / floor_ms:.1f}x the floor")
    single_ppo = ppo_rate(make_vec_env("nsr_env/NSR-v0", n_envs=1, seed=0), args.ppo_steps)
    batched_ppo = ppo_rate(make_batched("nsr_env/NSR-v0", args.num_envs), args.ppo_steps)
    ratio = batched_ppo / single_ppo
    print(f"MaskablePPO training, one single env: {single_ppo:.0f} steps/s ({args.ppo_steps} steps)")
    print(
        f"MaskablePPO training, --vector {args.num_envs}: {batched_ppo:.0f} steps/s, {ratio:.2f}x "
        f"(target >= 4: {'met' if ratio >= 4 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
