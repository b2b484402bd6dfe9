"""Feature extraction throughput vs cache-hit load time on the default scenario's data.

Runs the extraction cold into a fresh temporary cache, then loads the same entries
several times, all in one process, and prints images/s, seconds and their ratio
(target: a cache hit at least 50x faster than extraction).

    python benchmarks/feature_cache.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from nsr_env.backbones import make_backbone
from nsr_env.data import split_fashion_mnist
from nsr_env.data.tasks import DEFAULT_EVAL_PER_CLASS, DEFAULT_TRAIN_PER_CLASS
from nsr_env.features import task_features


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone = make_backbone()
    tasks = split_fashion_mnist(train_per_class=DEFAULT_TRAIN_PER_CLASS, eval_per_class=DEFAULT_EVAL_PER_CLASS)
    images = sum(len(t.train_indices) + len(t.eval_indices) for t in tasks)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        task_features(backbone, tasks, cache=cache, progress=False)
        extraction = time.perf_counter() - started
        loads = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            hits = task_features(backbone, tasks, cache=cache, progress=False)
            loads.append(time.perf_counter() - started)
            assert all(h.train.from_cache and h.held_out.from_cache for h in hits)
    load = statistics.median(loads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads")
    print(f"default scenario: {len(tasks)} tasks, {images} images, {backbone.name} at {backbone.transform.size}px")
    print(f"extraction (cold):  {extraction:7.2f} s  {images / extraction:8.0f} images/s")
    print(f"cache hit (median): {load:7.3f} s  {images / load:8.0f} images/s")
    ratio = extraction / load
    print(f"cache hit is {ratio:.0f}x faster than extraction (target >= 50x: {'met' if ratio >= 50 else 'NOT met'})")


if __name__ == "__main__":
    main()
