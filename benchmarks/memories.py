"""Memory mechanisms side by side: bytes per stored task, the bytes one more task adds, recovery, step time.

Bytes: ``pairs`` with all 45 Fashion-MNIST class pairs and a memory of 64 entries, so every
task keeps its entry (two cycles, the similarity rule, seed 0). Per mechanism: the memory's
bytes per stored task at the end (shared parts included), the bytes the 45th task's first
write added, returning-visit recovery and cumulative regret.

Step time: ``default`` with the similarity rule (seed 0, one torch thread), wall time per
decision step of a whole episode, the median of ``--rounds`` episodes per memory taken in turns,
as a ratio to ``svd`` measured in the same run.

    python benchmarks/memories.py [--memories svd share] [--cycles 2] [--rounds 5]
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


def pairs_episode(memory: str, cycles: int) -> tuple[pd.DataFrame, NSREnv]:
    env = NSREnv("pairs", memory=memory, tasks_per_cycle=45, bank_capacity=64, cycles=cycles)
    rows, _ = run_episode(agents.make("similarity", env, seed=0), env, 0)
    return pd.DataFrame(rows), env


def step_times(memories: list[str], rounds: int) -> dict[str, float]:
    """Median wall milliseconds per decision step of a ``default`` episode, per memory; the memories take
    turns round by round, so a change in the host's load reaches all of them alike."""
    controllers = {}
    for memory in memories:
        env = NSREnv("default", memory=memory)
        controllers[memory] = agents.make("similarity", env, seed=0)
        run_episode(controllers[memory], env, 0)  # warm-up: threshold calibration, caches
    times: dict[str, list[float]] = {memory: [] for memory in memories}
    for _ in range(rounds):
        for memory, controller in controllers.items():
            started = time.perf_counter()
            rows, _ = run_episode(controller, controller.env, 0)
            times[memory].append(1e3 * (time.perf_counter() - started) / len(rows))
    return {memory: float(np.median(values)) for memory, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", nargs="+", default=sorted(MEMORIES), choices=sorted(MEMORIES))
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed default episodes per memory, taken in turns")
    args = parser.parse_args()
    rows = []
    with one_torch_thread():
        print(machine_line())
        for memory in args.memories:
            frame, env = pairs_episode(memory, args.cycles)
            sizes, stored = frame.bank_size.to_numpy(), frame.bank_bytes.to_numpy()
            last = int(np.argmax(sizes == sizes.max()))  # the step whose phase end filled the last position
            phases = frame.groupby("phase").last()
            returns = measures.returning_recovery(phases.task, phases.recovery_steps, env.scenario.phase_length)
            rows.append(
                {
                    "memory": memory,
                    "positions filled": int(sizes.max()),
                    "kB per task": stored[-1] / sizes[-1] / 1e3,
                    "kB one more task adds": (stored[last] - stored[last - 1]) / 1e3,
                    "returning recovery": float(np.mean(returns)),
                    "regret": float(frame.regret.sum()),
                }
            )
        milliseconds = step_times(args.memories, args.rounds)
    table = pd.DataFrame(rows).set_index("memory")
    table["ms per step (default)"] = pd.Series(milliseconds)
    if "svd" in table.index:
        table["kB per task vs svd"] = table.loc["svd", "kB per task"] / table["kB per task"]
        table["step time vs svd"] = table["ms per step (default)"] / table.loc["svd", "ms per step (default)"]
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
