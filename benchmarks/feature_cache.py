"""Feature extraction throughput vs cache-hit load time on the default scenario's data.

Runs the extraction cold into a fresh temporary cache, then loads the same entries
several times in the same process, and once more in a fresh process (what a new run of
an experiment sees: no dataset in memory, first ``torch.load``; the files are in the page
cache). Prints images/s, seconds and the ratios (target: a cache hit at least 50x faster
than extraction).

    python benchmarks/feature_cache.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from machine import machine_line

from nsr_env.backbones import make_backbone
from nsr_env.data import split_fashion_mnist
from nsr_env.data.tasks import DEFAULT_EVAL_PER_CLASS, DEFAULT_TRAIN_PER_CLASS
from nsr_env.features import task_features


def default_scenario():
    """The default backbone and Split-FashionMNIST tasks, as `nsr prepare` builds them."""
    tasks = split_fashion_mnist(train_per_class=DEFAULT_TRAIN_PER_CLASS, eval_per_class=DEFAULT_EVAL_PER_CLASS)
    return make_backbone(), tasks


def timed_hit(backbone, tasks, cache: str) -> float:
    """Seconds to load every task's features from ``cache``; fails if anything was recomputed."""
    started = time.perf_counter()
    hits = task_features(backbone, tasks, cache=cache, progress=False)
    elapsed = time.perf_counter() - started
    assert all(h.train.from_cache and h.held_out.from_cache for h in hits), "a cache entry was recomputed"
    return elapsed


def fresh_process_hit(cache: str, threads: int) -> tuple[float, float]:
    """(the first cache hit in a new Python process, that whole process's wall time) in seconds."""
    command = [sys.executable, __file__, "--fresh-hit", cache, "--threads", str(threads)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1]), time.perf_counter() - started


def verdict(ratio: float) -> str:
    return "met" if ratio >= 50 else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--fresh-hit", metavar="CACHE", help=argparse.SUPPRESS)  # the child process's mode
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone, tasks = default_scenario()
    if args.fresh_hit:
        print(timed_hit(backbone, tasks, args.fresh_hit))
        return
    images = sum(len(t.train_indices) + len(t.eval_indices) for t in tasks)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        task_features(backbone, tasks, cache=cache, progress=False)
        extraction = time.perf_counter() - started
        load = statistics.median(timed_hit(backbone, tasks, cache) for _ in range(args.repeats))
        fresh, process = fresh_process_hit(cache, args.threads)
    print(machine_line())
    print(f"default scenario: {len(tasks)} tasks, {images} images, {backbone.name} at {backbone.transform.size}px")
    for label, seconds in (
        ("extraction (cold)", extraction),
        (f"cache hit, same process (median of {args.repeats})", load),
        ("cache hit, fresh process (first)", fresh),
    ):
        print(f"{label + ':':<40}{seconds:8.3f} s {images / seconds:9.0f} images/s")
    print(f"  (that whole process, with Python start-up, imports, backbone and data loading: {process:.2f} s)")
    for where, seconds in (("same process", load), ("fresh process", fresh)):
        ratio = extraction / seconds
        print(f"cache hit ({where}) is {ratio:.0f}x faster than extraction (target >= 50x: {verdict(ratio)})")


if __name__ == "__main__":
    main()
