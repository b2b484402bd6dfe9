"""Sweep throughput: the same grid with ``--jobs 1`` and ``--jobs 2``, in one run (target: at least 1.7x).

The grid is four rule controllers on the default scenario, one slot, M in {2, 3, 4} x T in
{1, 2, 3}, two seeds: 72 cells of 80-480 decision steps. Each contender writes into a
fresh folder.

A control measures what two processes can gain on this machine at all: the same
memory-bound tensor kernel (the shape of a held-out evaluation) run twice, serially and
in two processes.

    python benchmarks/sweep_jobs.py
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import tempfile
import time
from pathlib import Path

import torch
from machine import machine_line

from analysis.sweep import run_sweep

GRID = """
name: jobs-benchmark
scenarios:
  - scenario: default
    grid: {tasks_per_cycle: [2, 3, 4], cycles: [1, 2, 3], slots: 1}
agents: [fresh, similarity, keep, oracle]
seeds: [0, 1]
"""


def kernel(_: int = 0) -> None:
    torch.set_num_threads(1)
    outputs = torch.randn(800, 1280)
    for _ in range(2000):
        (outputs * 1.0001).clamp_(0, 6).sum()


def control_speedup() -> float:
    started = time.perf_counter()
    kernel(), kernel()
    serial = time.perf_counter() - started
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        pool.submit(kernel).result()  # start the workers before timing
        started = time.perf_counter()
        list(pool.map(kernel, range(2)))
    return serial / (time.perf_counter() - started)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "grid.yaml"
        config.write_text(GRID)
        warm_up = Path(folder) / "warm-up.yaml"
        warm_up.write_text(GRID.replace("seeds: [0, 1]", "seeds: [9]").replace("[2, 3, 4]", "[2]"))
        run_sweep(warm_up, Path(folder) / "warm-up", progress=False)  # features and a* into the cache first
        seconds = {}
        for jobs in (1, 2):
            started = time.perf_counter()
            run_sweep(config, Path(folder) / f"jobs{jobs}", jobs=jobs, progress=False)
            seconds[jobs] = time.perf_counter() - started
    print(machine_line())
    for jobs, value in seconds.items():
        print(f"--jobs {jobs}: {value:.1f} s for 72 cells")
    speedup = seconds[1] / seconds[2]
    print(f"control, a memory-bound tensor kernel twice: two processes {control_speedup():.2f}x faster than one")
    print(f"speed-up of --jobs 2: {speedup:.2f}x (target >= 1.7: {'met' if speedup >= 1.7 else 'NOT met'})")


if __name__ == "__main__":
    main()
