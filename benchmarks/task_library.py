"""The offline task library: cold extraction, then warm loads from the feature cache, and memory.

Extracts every library into a fresh temporary cache at its registered scenario's sizes (pairs,
rotated, traps, mixed: every task, 200 training, 100 held-out and 50 probe images per class,
digits capped at 100/30/30; long: its registered first 240 tasks at 100/50/25), in that order,
so a library reuses what an earlier one extracted (a class's images go through the backbone once
per variant). Then loads them all again in the same process (datasets already in memory) and in
a fresh process (what a new experiment sees: derived datasets rebuilt, entries read from the page
cache). Prints seconds, images/s and the resident memory (RSS) with every library loaded.

    python benchmarks/task_library.py [--threads N] [--scale 1.0] [--long-tasks 240]

``--scale 0.1`` (per-class counts x 0.1) and a smaller ``--long-tasks`` check the script in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from machine import machine_line

from nsr_env import features
from nsr_env.data.library import LIBRARIES, SUBSET_CAPS
from nsr_env.scenarios import TASK_SOURCES, make_scenario

EXTRACTED = [0]  # images through the backbone, counted by a wrapper around features.extract


def _counting(extract):
    def wrapper(backbone, images, *args, **kwargs):
        EXTRACTED[0] += len(images)
        return extract(backbone, images, *args, **kwargs)

    return wrapper


features.extract = _counting(features.extract)


def library_scenarios(scale: float, long_tasks: int) -> list:
    """Each library's registered scenario, with all of its tasks (long: ``long_tasks``), sizes x ``scale``."""
    scenarios = []
    for name in LIBRARIES:
        registered = make_scenario(name)
        sizes = {
            field: max(1, round(getattr(registered, field) * scale))
            for field in ("train_per_class", "eval_per_class", "probe_per_class")
        }
        tasks = long_tasks if name == "long" else len(LIBRARIES[name]())
        scenarios.append(make_scenario(name, tasks_per_cycle=tasks, **sizes))
    return scenarios


def distinct_images(scenario) -> int:
    """Images in the distinct (dataset, class) subsets of the scenario's tasks: what it loads (or extracts) alone."""
    chosen = LIBRARIES[scenario.source]()[: scenario.tasks_per_cycle]
    counts = (scenario.train_per_class, scenario.eval_per_class, scenario.probe_per_class)
    total = 0
    for dataset, _ in {(task.dataset, cls) for task in chosen for cls in task.classes}:
        caps = SUBSET_CAPS.get(dataset.partition("@")[0], counts)
        total += sum(min(count, cap) for count, cap in zip(counts, caps, strict=True))
    return total


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    with open("/proc/self/status") as handle:
        current = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return current / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_all(scenarios: list, cache: str) -> list[dict]:
    """Load every library, keeping each in memory; per library: tasks, seconds, images, images extracted, RSS."""
    rows, held = [], []
    for scenario in scenarios:
        before, started = EXTRACTED[0], time.perf_counter()
        tasks, _ = TASK_SOURCES.get(scenario.source)(scenario, cache, None, False)
        seconds = time.perf_counter() - started
        held.append(tasks)
        rows.append(
            {
                "library": scenario.source,
                "tasks": len(tasks),
                "seconds": seconds,
                "images": distinct_images(scenario),
                "extracted": EXTRACTED[0] - before,
                "rss_mb": rss_mb()[0],
            }
        )
    rows.append({"library": "all", "rss_mb": rss_mb()[0], "peak_rss_mb": rss_mb()[1]})
    return rows


def print_rows(title: str, rows: list[dict]) -> None:
    print(title)
    for row in rows[:-1]:
        rate = row["images"] / row["seconds"]
        print(
            f"  {row['library']:<8}{row['tasks']:>4} tasks {row['seconds']:8.2f} s {row['images']:>7} images "
            f"{rate:7.0f} images/s, {row['extracted']:>6} extracted; RSS {row['rss_mb']:6.0f} MiB"
        )
    seconds, extracted = sum(row["seconds"] for row in rows[:-1]), sum(row["extracted"] for row in rows[:-1])
    current, peak = rows[-1]["rss_mb"], rows[-1]["peak_rss_mb"]
    print(
        f"  all     {seconds:14.2f} s, {extracted} images extracted ({extracted / seconds:.0f} images/s); "
        f"RSS with every library loaded {current:.0f} MiB, peak {peak:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--scale", type=float, default=1.0, help="per-class counts x this (default 1: registered)")
    parser.add_argument("--long-tasks", type=int, default=make_scenario("long").tasks_per_cycle)
    parser.add_argument("--warm", metavar="CACHE", help=argparse.SUPPRESS)  # the fresh process's mode
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scenarios = library_scenarios(args.scale, args.long_tasks)
    if args.warm:
        print(json.dumps(load_all(scenarios, args.warm)))
        return
    with tempfile.TemporaryDirectory() as cache:
        cold = load_all(scenarios, cache)
        warm = load_all(scenarios, cache)
        assert all(row["extracted"] == 0 for row in warm[:-1]), "a warm load extracted features"
        command = [sys.executable, __file__, "--warm", cache, "--threads", str(args.threads), "--scale",
                   str(args.scale), "--long-tasks", str(args.long_tasks)]  # fmt: skip
        started = time.perf_counter()
        fresh = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        process = time.perf_counter() - started
        cache_bytes = sum(
            entry.stat().st_size for entry in os.scandir(os.path.join(cache, "features", scenarios[0].backbone))
        )
    print(machine_line())
    libraries = ", ".join(
        f"{s.source} {s.tasks_per_cycle} tasks at {s.train_per_class}/{s.eval_per_class}/{s.probe_per_class}"
        for s in scenarios
    )
    print(f"libraries (train/held-out/probe per class; digits capped at 100/30/30): {libraries}")
    print(f"feature cache: {cache_bytes / 2**20:.0f} MiB ('images': a library's distinct per-class images)")
    print_rows("cold extraction, libraries in this order (later ones reuse earlier entries)", cold)
    print_rows("warm load, same process", warm)
    print_rows("warm load, fresh process", fresh)
    print(f"  (the fresh process's wall time, with Python start-up and imports: {process:.1f} s)")


if __name__ == "__main__":
    main()
