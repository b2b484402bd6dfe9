"""TaskKnowledgeBank: recall latency at scale and bytes per entry beside the paper's 0.29 MB/task.

Recall: a bank of 10,000 entries with 320-d keys (the default key: the mean input of the adapted layer),
then 1,000 single queries through ``bank.recall`` (median and p95 microseconds per query;
target under 1 ms), and the same 1,000 queries as one batched call. The bank is filled
through ``reserve`` with random keys and 8 x 8 deltas, not full-size adapters: recall reads
only the key matrix, so the factors' size does not change its cost, and small deltas keep
the fill to seconds.

Bytes: the real entries of the ``default`` scenario (rank-4 LoRA on EfficientNet-Lite0's
320 -> 1280 conv_head, 2-class head on 1280 features, 320-d key), each task trained for
one phase and compressed at the default SVD energy (0.99, the setting whose own-entry
recall recovers in 0-1 steps, see tests/test_scenarios.py), stored as float32 and float16.

    python benchmarks/bank.py [--entries 10000] [--queries 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine_line

from nsr_env.learner import FRESH
from nsr_env.memories.svd import TaskKnowledgeBank
from nsr_env.scenarios import make_scenario, prepare

PAPER_MB_PER_TASK = 0.29
KEY_DIM = 320  # the default key: mean input of the adapted layer (EfficientNet-Lite0 conv_head)


def recall_latency(entries: int, queries: int, generator: torch.Generator) -> None:
    bank = TaskKnowledgeBank(capacity=entries, key_dim=KEY_DIM, rank=2)
    started = time.perf_counter()
    small = torch.zeros(2, KEY_DIM), torch.zeros(2)
    for label in range(entries):
        delta = torch.randn(8, 8, generator=generator)
        bank.reserve(delta, *small, torch.randn(KEY_DIM, generator=generator), label)
    print(f"filled {entries:,} entries (8x8 deltas, random keys) in {time.perf_counter() - started:.1f} s")

    batch = torch.randn(queries, KEY_DIM, generator=generator)
    for query in batch[:20]:  # warm-up
        bank.recall(query)
    latencies = []
    for query in batch:
        started = time.perf_counter()
        bank.recall(query)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    median, p95 = statistics.median(latencies) * 1e6, latencies[int(0.95 * len(latencies))] * 1e6
    verdict = "meets" if p95 < 1000 else "misses"
    print(f"recall, one query at a time: median {median:,.0f} us, p95 {p95:,.0f} us per query ({verdict} < 1 ms)")
    started = time.perf_counter()
    bank.recall(batch)
    batched = (time.perf_counter() - started) / queries * 1e6
    print(f"recall, {queries:,} queries in one call: {batched:,.0f} us per query")
    key_mb = bank.keys.numel() * bank.keys.element_size() / 1e6
    print(f"key matrix read per query: {key_mb:.1f} MB float32 (one pass over it per call)")


def default_entry_bytes(float16: bool) -> tuple[float, list[int]]:
    """Mean bytes per entry and the kept SVD ranks after one phase of every default task."""
    data = prepare(make_scenario("default", bank_float16=float16), progress=False)
    learner = data.learner(seed=0)
    for task in range(data.scenario.tasks_per_cycle):
        learner.begin_phase(task, task % data.scenario.slots, FRESH)
        for _ in range(data.scenario.phase_length):
            learner.decision_step()
        learner.end_phase()
    ranks = [learner.memory.entries[p].factors.rank for p in learner.memory.positions()]
    return learner.memory.bytes_per_entry(), ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(machine_line())
    recall_latency(args.entries, args.queries, generator)
    print("bytes per entry of the default scenario (rank-4 LoRA on 320 -> 1280, 2-class head, 320-d key):")
    for float16 in (False, True):
        size, ranks = default_entry_bytes(float16)
        label = "float16 factors" if float16 else "float32        "
        print(f"  {label}: {size:,.0f} B = {size / 1e6:.3f} MB, kept SVD ranks {ranks} (paper: {PAPER_MB_PER_TASK} MB)")
    print(f"  plus {KEY_DIM * 4:,} B per bank position for the float32 unit-key matrix recall searches")


if __name__ == "__main__":
    main()
