"""Memory mechanisms side by side: bytes per stored task, the bytes one more task adds, recovery, step time.

Bytes: ``pairs`` with all 45 Fashion-MNIST class pairs and a memory of 64 entries, so every
task keeps its entry (two cycles, the similarity rule, seed 0). Per mechanism: the memory's
bytes per stored task at the end (shared parts included), the bytes the 45th task's first
write added, returning-visit recovery and cumulative regret.

Step time: ``default`` with the similarity rule (seed 0, one torch thread), wall time per
decision step of the whole episode, as a ratio to ``svd`` measured in the same run.

    python benchmarks/memories.py [--memories svd share] [--cycles 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from machine import machine_line

import agents
from agents.evaluate import run_episode
from nsr_env import measures
from nsr_env.envs import NSREnv
from nsr_env.memories import MEMORIES
from nsr_env.threads import one_torch_thread


def episode(scenario: str, memory: str, **overrides) -> tuple[pd.DataFrame, float, NSREnv]:
    env = NSREnv(scenario, memory=memory, **overrides)
    controller = agents.make("similarity", env, seed=0)
    run_episode(controller, env, 0)  # warm-up: threshold calibration, caches
    started = time.perf_counter()
    rows, _ = run_episode(controller, env, 0)
    return pd.DataFrame(rows), time.perf_counter() - started, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", nargs="+", default=sorted(MEMORIES), choices=sorted(MEMORIES))
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args()
    print(machine_line())
    rows = []
    with one_torch_thread():
        for memory in args.memories:
            frame, _, env = episode("pairs", memory, tasks_per_cycle=45, bank_capacity=64, cycles=args.cycles)
            sizes, stored = frame.bank_size.to_numpy(), frame.bank_bytes.to_numpy()
            last = int(np.argmax(sizes == sizes.max()))  # the step whose phase end wrote the 45th task
            phases = frame.groupby("phase").last()
            returns = measures.returning_recovery(phases.task, phases.recovery_steps, env.scenario.phase_length)
            default, seconds, _ = episode("default", memory)
            rows.append(
                {
                    "memory": memory,
                    "tasks stored": int(sizes.max()),
                    "kB per task": stored[-1] / sizes[-1] / 1e3,
                    "kB one more task adds": (stored[last] - stored[last - 1]) / 1e3,
                    "returning recovery": float(np.mean(returns)),
                    "regret": float(frame.regret.sum()),
                    "ms per step (default)": 1e3 * seconds / len(default),
                }
            )
    table = pd.DataFrame(rows).set_index("memory")
    if "svd" in table.index:
        table["kB per task vs svd"] = table.loc["svd", "kB per task"] / table["kB per task"]
        table["step time vs svd"] = table["ms per step (default)"] / table.loc["svd", "ms per step (default)"]
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
