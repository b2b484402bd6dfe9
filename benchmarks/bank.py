"""TaskKnowledgeBank: recall latency at scale and bytes per entry beside the paper's 0.29 MB/task.

Recall: a bank of 10,000 entries with 320-d keys (the default key: the mean input of the adapted layer),
then 1,000 single queries through ``bank.recall`` (median and p95 microseconds per query;
target under 1 ms), and the same 1,000 queries as one batched call. The bank is filled
through ``reserve`` with random keys and 8 x 8 deltas, not full-size adapters: recall reads
only the key matrix, so the factors' size does not change its cost, and small deltas keep
the fill to seconds.

Bytes: one entry for a rank-4 LoRA on a 320 -> 1280 layer with a 2-class head and a
320-d key, stored as float32 and as float16 factors.

    python benchmarks/bank.py [--entries 10000] [--queries 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine_line

from nsr_env.bank import TaskKnowledgeBank

PAPER_MB_PER_TASK = 0.29
KEY_DIM = 320  # the default key: mean input of the adapted layer (EfficientNet-Lite0 conv_head)
LAYER_IN, LAYER_OUT, LORA_RANK, CLASSES = 320, 1280, 4, 2


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


def entry_bytes(float16: bool, generator: torch.Generator) -> int:
    bank = TaskKnowledgeBank(capacity=1, key_dim=KEY_DIM, rank=LORA_RANK, float16=float16)
    B, A = torch.randn(LAYER_OUT, LORA_RANK, generator=generator), torch.randn(LORA_RANK, LAYER_IN, generator=generator)
    delta = B @ A
    head = torch.randn(CLASSES, KEY_DIM, generator=generator), torch.randn(CLASSES, generator=generator)
    bank.reserve(delta, *head, torch.randn(KEY_DIM, generator=generator), 0)
    assert bank.entries[0].factors.rank == LORA_RANK
    return round(bank.bytes_per_entry())


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
    print(f"bytes per entry: rank-{LORA_RANK} LoRA on {LAYER_IN} -> {LAYER_OUT}, {CLASSES}-class head, {KEY_DIM}-d key")
    for float16 in (False, True):
        size = entry_bytes(float16, generator)
        label = "float16 factors" if float16 else "float32        "
        print(f"  {label}: {size:,} B = {size / 1e6:.3f} MB (paper: {PAPER_MB_PER_TASK} MB per task)")
    print(f"  plus {KEY_DIM * 4:,} B per bank position for the float32 unit-key matrix recall searches")


if __name__ == "__main__":
    main()
