"""Environment speed on ``default``: steps per second, the environment's own overhead, PPO training speed.

Four figures, one process, one torch thread:
1. ``env.step`` with a trivial controller (fresh start at each boundary, then continue);
2. the same stream driven through the bare core (``begin_phase`` / ``decision_step`` /
   ``end_phase`` of the learner, no observation, mask or info): the ratio of 1 to 2 is the
   environment's own overhead (target <= 1.3);
3. the interfaces' cost, as ratios of episodes run alternately in this process: the default
   candidate observation (``candidates=8``) and the labelled probe (``probe_labels=True``)
   against the position-indexed interface (``candidates=0``), same stream (target <= 1.15);
4. stable-baselines3 PPO and sb3-contrib MaskablePPO training steps per second (rollouts
   plus updates) on one environment, MaskablePPO on both interfaces.

    python benchmarks/env_step.py [--episodes 3] [--ppo-steps 4096]
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
from stable_baselines3 import PPO

import nsr_env  # noqa: F401  (registers the ids)
from nsr_env.learner import FRESH
from nsr_env.recall import Recall

INTERFACES = {
    "position (candidates=0)": {"candidates": 0},
    "candidates=8 (default)": {},
    "candidates=8 + labelled probe": {"probe_labels": True},
}


def env_episode(env) -> float:
    """Seconds per step of one episode with the trivial controller."""
    env.reset(seed=0)
    inner = env.unwrapped
    started = time.perf_counter()
    for _ in range(inner.scenario.num_steps):
        fresh = inner.at_boundary
        env.step(np.array([0 if fresh else inner.current_slot, Recall.FRESH if fresh else Recall.KEEP]))
    return (time.perf_counter() - started) / inner.scenario.num_steps


def core_episode(data) -> float:
    """Seconds per step of the same stream through the learner alone."""
    scenario, learner = data.scenario, data.learner(seed=0)
    started = time.perf_counter()
    for task in scenario.phase_tasks():
        learner.begin_phase(int(task), 0, FRESH)
        for _ in range(scenario.phase_length):
            learner.decision_step()
        learner.end_phase()
    return (time.perf_counter() - started) / scenario.num_steps


def ppo_steps_per_second(algorithm, steps: int, **env_kwargs) -> float:
    env = gym.make("nsr_env/NSR-v0", **env_kwargs)
    model = algorithm("MlpPolicy", env, n_steps=512, batch_size=64, seed=0, device="cpu")
    started = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3, help="episodes per contender (alternating)")
    parser.add_argument("--ppo-steps", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = gym.make("nsr_env/NSR-v0")
    data = env.unwrapped.data
    env_episode(env), core_episode(data)  # warm-up
    env_times, core_times = [], []
    for _ in range(args.episodes):
        env_times.append(env_episode(env))
        core_times.append(core_episode(data))
    env_ms, core_ms = statistics.median(env_times) * 1e3, statistics.median(core_times) * 1e3
    env_best, core_best = min(env_times) * 1e3, min(core_times) * 1e3  # the least disturbed episode
    ratio = env_ms / core_ms
    print(machine_line())
    print(f"default: {env.unwrapped.scenario.num_steps} steps per episode, median of {args.episodes} episodes")
    print(
        f"env.step, trivial controller: median {env_ms:.3f} ms = {1e3 / env_ms:.0f} steps/s, best episode "
        f"{1e3 / env_best:.0f} steps/s (target >= 500)"
    )
    print(f"bare core, same stream: median {core_ms:.3f} ms = {1e3 / core_ms:.0f} steps/s, best {1e3 / core_best:.0f}")
    print(f"environment overhead: {ratio:.2f}x the bare core (target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})")
    interfaces = {name: gym.make("nsr_env/NSR-v0", **kwargs) for name, kwargs in INTERFACES.items()}
    for interface in interfaces.values():
        env_episode(interface)  # warm-up
    seconds = {name: [] for name in interfaces}
    for _ in range(args.episodes):
        for name, interface in interfaces.items():
            seconds[name].append(env_episode(interface))
    position = statistics.median(seconds["position (candidates=0)"])
    for name, times in seconds.items():
        ratio = statistics.median(times) / position
        print(f"env.step, {name}: median {statistics.median(times) * 1e3:.3f} ms, {ratio:.3f}x the position interface")
    overhead = statistics.median(seconds["candidates=8 + labelled probe"]) / position
    print(f"candidates + labelled probe: {overhead:.3f}x (target <= 1.15: {'met' if overhead <= 1.15 else 'NOT met'})")
    for algorithm, kwargs in ((PPO, {}), (MaskablePPO, {"candidates": 0}), (MaskablePPO, {})):
        rate = ppo_steps_per_second(algorithm, args.ppo_steps, **kwargs)
        interface = "position interface" if kwargs else "candidate interface (default)"
        print(f"{algorithm.__name__} training on one env, {interface}: {rate:.0f} steps/s ({args.ppo_steps} steps)")


if __name__ == "__main__":
    main()
