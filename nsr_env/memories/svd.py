"""``svd``: the TaskKnowledgeBank, SVD-compressed adapters with key embeddings, recalled by cosine similarity.

An entry holds one task's adapter delta ``B @ A`` as truncated SVD factors, the task's
head, a key embedding (the mean frozen feature of the task's inputs) and metadata. The
bank has ``capacity`` positions; an entry keeps its position for life, so position ``i``
means the same entry to a controller from one step to the next. When the bank is full,
the retention policy (LRU by default) picks the entry to evict.

Recall scores every position against a query with one matrix product over a unit-norm
key matrix, masked by a boolean occupancy tensor that reserve, eviction and load keep
up to date, so no Python loop runs over the entries.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nsr_env.lowrank import Factors, LowRank, arrow_score, compress
from nsr_env.memories.base import Memory
from nsr_env.memories.retention import RETENTION_POLICIES
from nsr_env.memories.storage import MemoryFileError, load_state, save_state
from nsr_env.records import Head, Stored

if TYPE_CHECKING:
    from nsr_env.config import LearnerConfig

BANK_FORMAT = "nsr-env TaskKnowledgeBank"
BANK_VERSION = 1


BankFileError = MemoryFileError  # a saved bank that cannot be read: wrong format or version, truncated, or altered


@dataclass(eq=False)
class BankEntry:
    """One reserved adapter. ``task_label`` is hidden: for analysis, never for controllers.

    ``created`` and ``last_use`` are bank clock times; ``visits`` counts the uses of the
    entry: its first reserve, each refresh in place, and each recall (``touch``).
    """

    factors: Factors
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    key: torch.Tensor
    task_label: int
    created: int
    last_use: int
    visits: int = 1

    @functools.cached_property  # an entry's tensors never change after it is made; the env reads this every step
    def nbytes(self) -> int:
        tensors = (self.head_weight, self.head_bias, self.key)
        return self.factors.nbytes + sum(t.numel() * t.element_size() for t in tensors)


@dataclass(eq=False)
class TaskKnowledgeBank(Memory):
    """At most ``capacity`` compressed adapters, recalled by key similarity.

    ``entries``, ``keys`` and ``occupied`` are read-only views for callers; change the
    bank through :meth:`write`, :meth:`reserve` and :meth:`touch` only, which keep them consistent.
    """

    name = "svd"
    file_format, file_version, file_noun = BANK_FORMAT, BANK_VERSION, "bank"  # what save writes and load expects

    capacity: int
    key_dim: int
    energy: float | None = None
    rank: int | None = None
    float16: bool = False
    retention: str = "lru"
    entries: list[BankEntry | None] = field(init=False, repr=False)
    keys: torch.Tensor = field(init=False, repr=False)  # (capacity, key_dim) unit-norm rows, zero where empty
    occupied: torch.Tensor = field(init=False, repr=False)  # (capacity,) bool: which positions hold an entry
    clock: int = field(init=False, default=0)
    _task_positions: dict[int, int] = field(init=False, repr=False)  # task label -> position of its latest entry

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"bank_capacity={self.capacity} must be at least 1")
        if self.key_dim < 1:
            raise ValueError(f"key_dim={self.key_dim} must be at least 1")
        if self.retention not in RETENTION_POLICIES:
            raise ValueError(f"retention={self.retention!r} is unknown; choose one of {sorted(RETENTION_POLICIES)}")
        if self.energy is not None and self.rank is not None:
            raise ValueError("give the bank svd_energy or svd_rank, not both")
        if self.energy is None and self.rank is None:
            self.energy = 0.99
        self.entries = [None] * self.capacity
        self.keys = torch.zeros(self.capacity, self.key_dim)
        self.occupied = torch.zeros(self.capacity, dtype=torch.bool)
        self._task_positions = {}

    @classmethod
    def from_config(cls, config: LearnerConfig, key_dim: int) -> TaskKnowledgeBank:
        return cls(
            capacity=config.bank_capacity,
            key_dim=key_dim,
            energy=config.svd_energy,
            rank=config.svd_rank,
            float16=config.bank_float16,
            retention=config.retention,
        )

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def reserve(
        self,
        delta: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        head_weight: torch.Tensor,
        head_bias: torch.Tensor,
        key: torch.Tensor,
        task_label: int,
        position: int | None = None,
    ) -> int:
        """Compress ``delta`` and store it with its head and key; return its position.

        With ``position`` of an occupied entry, that entry is refreshed in place (a revisit:
        same ``created``, one more visit). Otherwise the entry goes to the lowest free
        position, evicting one by the retention policy when the bank is full.
        """
        if position is not None and not (isinstance(position, int) and 0 <= position < self.capacity):
            raise ValueError(f"position={position!r} is not a bank position; use 0..{self.capacity - 1} or None")
        if key.shape != (self.key_dim,):
            raise ValueError(f"key has shape {tuple(key.shape)}; this bank's keys are ({self.key_dim},)")
        parts = delta if isinstance(delta, tuple) else (delta,)
        checks = [("delta", t) for t in parts] + [("head_weight", head_weight), ("head_bias", head_bias), ("key", key)]
        for name, tensor in checks:
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name} holds NaN or infinite values; the bank stores only finite adapters")
        dtype = torch.float16 if self.float16 else torch.float32
        factors = compress(delta, energy=self.energy if self.rank is None else None, rank=self.rank, dtype=dtype)
        now = self.tick()
        previous = None if position is None else self.entries[position]
        if previous is not None:
            if self._task_positions.get(previous.task_label) == position:
                del self._task_positions[previous.task_label]
            created, visits = previous.created, previous.visits + 1
        else:
            position = self._free_position()
            created, visits = now, 1
        self.entries[position] = BankEntry(
            factors, head_weight.detach().clone(), head_bias.detach().clone(), key.detach().clone().float(),
            int(task_label), created, now, visits,
        )  # fmt: skip
        self.keys[position] = torch.nn.functional.normalize(key.detach().float(), dim=0)
        self.occupied[position] = True
        self._task_positions[int(task_label)] = position
        return position

    def write(self, task: int, adapter: LowRank, head: Head, key: torch.Tensor) -> int:
        return self.reserve(adapter, head.weight, head.bias, key, task, position=self.position_of(task))

    def _free_position(self) -> int:
        """The lowest empty position, after evicting the retention policy's victim if the bank is full."""
        if not self.occupied.all():
            return int((~self.occupied).nonzero()[0])
        victim = RETENTION_POLICIES[self.retention](self.entries)  # full: position order is list order
        if self._task_positions.get(self.entries[victim].task_label) == victim:
            del self._task_positions[self.entries[victim].task_label]
        self.entries[victim] = None
        self.keys[victim] = 0
        self.occupied[victim] = False
        return victim

    def similarities(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of ``query`` (key_dim,) or (Q, key_dim) to every position; -inf where empty."""
        if query.shape[-1:] != (self.key_dim,) or query.dim() > 2:
            raise ValueError(f"query has shape {tuple(query.shape)}; use ({self.key_dim},) or (Q, {self.key_dim})")
        scores = torch.nn.functional.normalize(query.float(), dim=-1) @ self.keys.T
        return scores.masked_fill(~self.occupied, float("-inf"))

    def recall(self, query: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most similar occupied positions (fewer if fewer are occupied), best first, with their scores."""
        if k < 1:
            raise ValueError(f"k={k} must be at least 1")
        scores, positions = torch.topk(self.similarities(query), min(k, len(self)))
        return positions, scores

    def touch(self, position: int) -> BankEntry:
        """Mark an entry as used now (for LRU, and one more visit for LFU) and return it."""
        entry = self.entries[position] if 0 <= position < self.capacity else None
        if entry is None:
            raise ValueError(f"bank position {position} is empty; occupied positions: {self.positions()}")
        entry.last_use = self.tick()
        entry.visits += 1
        return entry

    def read(self, position: int) -> Stored:
        entry = self.touch(position)
        return Stored(entry.factors, Head(entry.head_weight, entry.head_bias))

    def peek(self, position: int) -> Stored:
        entry = self.entries[position] if 0 <= position < self.capacity else None
        if entry is None:
            raise ValueError(f"bank position {position} is empty; occupied positions: {self.positions()}")
        return Stored(entry.factors, Head(entry.head_weight, entry.head_bias))

    def route_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        scores = torch.full((self.capacity,), float("-inf"))
        for position in self.positions():
            scores[position] = arrow_score(self.entries[position].factors, inputs)
        return scores

    def position_of(self, task: int) -> int | None:
        return self._task_positions.get(task)

    def task_at(self, position: int) -> int | None:
        entry = self.entries[position]
        return None if entry is None else entry.task_label

    def describe(self, position: int) -> str:
        entry = self.entries[position]
        if entry is None:
            return "empty"
        return (
            f"task {entry.task_label}, rank {entry.factors.rank}, {entry.nbytes / 1e3:.1f} kB, "
            f"visits {entry.visits}, last use {entry.last_use}"
        )

    @property
    def nbytes(self) -> int:
        """Bytes of every entry's factors, head and key."""
        return sum(entry.nbytes for entry in self.entries if entry is not None)

    # --- persistence -------------------------------------------------------------------

    def _state(self) -> dict:
        config = {k: getattr(self, k) for k in ("capacity", "key_dim", "energy", "rank", "float16", "retention")}
        entries = [
            None if e is None else {
                "U": e.factors.U, "S": e.factors.S, "Vh": e.factors.Vh, "head_weight": e.head_weight,
                "head_bias": e.head_bias, "key": e.key, "task_label": e.task_label, "created": e.created,
                "last_use": e.last_use, "visits": e.visits,
            }
            for e in self.entries
        ]  # fmt: skip
        return {"config": config, "clock": self.clock, "entries": entries, "task_positions": self._task_positions}

    def save(self, path: str | Path) -> None:
        """Write the bank to one file, atomically: a header line, a SHA-256, the payload."""
        save_state(path, self.file_format, self.file_version, self._state())

    @classmethod
    def load(cls, path: str | Path) -> TaskKnowledgeBank:
        """Read a bank written by :meth:`save`; a wrong, truncated or altered file raises BankFileError."""
        return load_state(path, cls.file_format, cls.file_version, cls.file_noun, cls._from_state)

    @classmethod
    def _from_state(cls, state: dict) -> TaskKnowledgeBank:
        bank = cls(**state["config"])
        if len(state["entries"]) != bank.capacity:
            raise ValueError(f"{len(state['entries'])} entries saved for capacity {bank.capacity}")
        bank.clock = state["clock"]
        for position, item in enumerate(state["entries"]):
            if item is None:
                continue
            factors = Factors(item.pop("U"), item.pop("S"), item.pop("Vh"))
            bank.entries[position] = BankEntry(factors, **item)
            bank.keys[position] = torch.nn.functional.normalize(item["key"].float(), dim=0)
            bank.occupied[position] = True
            latest = bank.position_of(item["task_label"])
            if latest is None or bank.entries[latest].created < item["created"]:
                bank._task_positions[item["task_label"]] = position
        if "task_positions" in state:  # the index as saved (files written before it was saved: by creation time)
            bank._task_positions = {int(task): int(position) for task, position in state["task_positions"].items()}
        return bank
