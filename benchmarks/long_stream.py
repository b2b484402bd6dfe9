"""One `long` episode with the similarity rule: wall time, resident memory over the episode, recall latency.

The `long` scenario streams 240 distinct tasks (rotated Fashion-MNIST class pairs) over 1,200
phases of Zipf recurrence into a memory of 64 entries, so eviction and retrieval at scale both
happen. Targets: the episode in under 10 minutes on 2 cores, resident memory bounded (it must
not grow with the phases once the tasks are loaded), and one recall over the full memory under
1 ms. Features come from the cache (`nsr prepare --scenario long` builds them).

    python benchmarks/long_stream.py [--phases N] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch
from machine import machine_line

import agents
import nsr_env  # noqa: F401  (registers the ids)


def resident_mb() -> float:
    """This process's resident set size (VmRSS), MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", type=int, default=None, help="stop after this many phases (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    started = time.perf_counter()
    env = gym.make("nsr_env/NSR-Long-v0")
    inner = env.unwrapped
    controller = agents.make("similarity", env, seed=0)
    loaded = time.perf_counter() - started
    print(f"loaded {len(inner.data.tasks)} tasks and the threshold in {loaded:.1f} s; RSS {resident_mb():,.0f} MB")
    scenario = inner.scenario
    phases = min(args.phases or scenario.num_phases, scenario.num_phases)
    observation, info = env.reset(seed=0)
    samples, started = [], time.perf_counter()
    for step in range(phases * scenario.phase_length):
        observation, _, _, _, info = env.step(controller.act(observation, info))
        if (step + 1) % (100 * scenario.phase_length) == 0:
            samples.append((step // scenario.phase_length + 1, resident_mb()))
    elapsed = time.perf_counter() - started
    steps = phases * scenario.phase_length
    full = elapsed * scenario.num_phases / phases
    print(f"{phases} phases, {steps:,} steps in {elapsed:.0f} s ({steps / elapsed:.0f} steps/s); "
          f"the full episode ({scenario.num_phases} phases): {full:.0f} s")  # fmt: skip
    print("RSS by phase: " + ", ".join(f"{phase}: {mb:,.0f} MB" for phase, mb in samples))
    if len(samples) >= 2:
        print(f"RSS growth from phase {samples[0][0]} to {samples[-1][0]}: {samples[-1][1] - samples[0][1]:+.0f} MB")
    memory, key = inner.learner.memory, inner.visit_key
    timings = []
    for _ in range(1000):
        tick = time.perf_counter()
        memory.similarities(key)
        timings.append(time.perf_counter() - tick)
    print(
        f"recall over the full memory ({len(memory)} entries): median {statistics.median(timings) * 1e6:.0f} us, "
        f"p95 {sorted(timings)[949] * 1e6:.0f} us per query"
    )


if __name__ == "__main__":
    main()
