"""Retention policies: which entry a full memory evicts. Pure Python over the entries' bookkeeping.

An entry needs ``created``, ``last_use`` and ``visits`` (clock times and a use count).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RetentionPolicy = Callable[[list[Any]], int]
"""Given the occupied entries in position order, return the index (into that list) to evict."""


def evict_least_recently_used(entries: list[Any]) -> int:
    """LRU: the entry reserved, refreshed or recalled longest ago."""
    return min(range(len(entries)), key=lambda i: (entries[i].last_use, entries[i].created))


def evict_oldest(entries: list[Any]) -> int:
    """FIFO: the entry first reserved longest ago; refreshes and recalls do not renew it."""
    return min(range(len(entries)), key=lambda i: entries[i].created)


def evict_least_visited(entries: list[Any]) -> int:
    """LFU: the entry with the fewest visits (reserves, refreshes, recalls); ties by LRU."""
    return min(range(len(entries)), key=lambda i: (entries[i].visits, entries[i].last_use))


RETENTION_POLICIES: dict[str, RetentionPolicy] = {
    "lru": evict_least_recently_used,
    "fifo": evict_oldest,
    "lfu": evict_least_visited,
}
