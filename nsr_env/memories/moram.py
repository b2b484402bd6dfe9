"""``moram``: a pool of frozen rank-1 atoms that activate themselves per input (MoRAM); no recall decision.

After MoRAM (Lu et al. 2025; public code Artificer-AI-Lab/MoRAM). Every phase end adds the
slot's ``r`` rank-1 atoms to the pool, frozen: atom ``i`` is a down-projection ``a_i`` (its
key) and a value ``b_i``. For an input ``x`` of the adapted layer the pool and the slot's own
(trainable) atoms compete together: ``z_i = a_i . x``, scores ``s = z / |z|`` (normalised
across atoms), the top ``moram_topk`` scores (at least 2; by default the LoRA rank) go through a
softmax at temperature ``moram_temperature`` (0.01) and the layer adds ``sum_i g_i z_i b_i``.
At evaluation, gates whose score is below ``moram_threshold`` (0.2) are dropped, as in the public
code. The pool is part of the model: every prediction, with or without a slot, goes through it,
so there is nothing to recall; the controller's choice is only the slot and fresh or keep
(:attr:`recallable` is False, and the environment masks recall).

A position holds one phase's atoms and the task's head at that phase end (heads stay per task:
the pool has no head). A task's later visits add new positions instead of replacing its old
atoms (MoRAM only ever adds); when the memory is full, the retention policy evicts a position
and its atoms leave the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from nsr_env.lowrank import Factors, LowRank
from nsr_env.memories.base import Memory
from nsr_env.memories.retention import RETENTION_POLICIES
from nsr_env.memories.storage import load_state, save_state
from nsr_env.records import Head, Stored

if TYPE_CHECKING:
    from nsr_env.config import LearnerConfig

MORAM_FORMAT = "nsr-env RankOneAtomMemory"
MORAM_VERSION = 1


@dataclass(eq=False)
class AtomGroup:
    """The atoms one phase end added: keys ``(r, in)``, values ``(out, r)`` (scale included), the task's head."""

    keys: torch.Tensor
    values: torch.Tensor
    head: Head
    task_label: int
    created: int
    last_use: int
    visits: int = 1


class RankOneAtomMemory(Memory):
    """At most ``capacity`` groups of rank-1 atoms, routed per input by their own keys."""

    name = "moram"
    recallable = False
    routes_per_input = True

    def __init__(
        self, capacity: int, topk: int = 4, temperature: float = 0.01, threshold: float = 0.2, retention: str = "lru"
    ) -> None:
        if capacity < 1:
            raise ValueError(f"bank_capacity={capacity} must be at least 1")
        if retention not in RETENTION_POLICIES:
            raise ValueError(f"retention={retention!r} is unknown; choose one of {sorted(RETENTION_POLICIES)}")
        self.capacity, self.topk, self.temperature, self.threshold = capacity, topk, temperature, threshold
        self.retention = retention
        self.groups: list[AtomGroup | None] = [None] * capacity
        self.occupied = torch.zeros(capacity, dtype=torch.bool)
        self.clock = 0
        self._projections: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._pool()

    @classmethod
    def from_config(cls, config: LearnerConfig, key_dim: int) -> RankOneAtomMemory:
        return cls(
            capacity=config.bank_capacity,
            topk=config.rank if config.moram_topk is None else config.moram_topk,
            temperature=config.moram_temperature,
            threshold=config.moram_threshold,
            retention=config.retention,
        )

    def _pool(self) -> None:
        """The frozen atoms of every group as two matrices, rebuilt after each change (new tensors: the
        :attr:`routed_state` that the learner's cache of slotless accuracies keys on)."""
        groups = [group for group in self.groups if group is not None]
        self.pool_keys = torch.cat([g.keys for g in groups]) if groups else None
        self.pool_values = torch.cat([g.values.T for g in groups]).contiguous() if groups else None  # (atoms, out)

    @property
    def routed_state(self) -> object:
        return self.pool_keys

    # --- the routed layer --------------------------------------------------------------------

    def adapted(self, inputs: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
        """The low-rank part of the adapted layer's output ``(m, out)`` for inputs ``(m, in)``: the pool's atoms
        and the slot's own (``A`` ``(r, in)``, ``B`` ``(out, r)``, both may be empty) gated together."""
        values = (B * scale).T  # values as rows: embedding_bag reads contiguous rows
        projections = inputs @ A.T  # z_i = a_i . x
        if self.pool_keys is not None:
            values = torch.cat([self.pool_values, values])
            projections = torch.cat([self._pool_projections(inputs), projections], dim=1)
        if len(values) == 0:
            return inputs.new_zeros(inputs.shape[0], B.shape[0])
        scores = F.normalize(projections, dim=1)
        k = min(max(self.topk, 2), len(values))
        top, chosen = scores.topk(k, dim=1)
        gates = torch.softmax(top / self.temperature, dim=1)
        if not torch.is_grad_enabled():
            gates = gates * (top >= self.threshold)
        weights = gates * projections.gather(1, chosen)
        return F.embedding_bag(chosen, values.contiguous(), per_sample_weights=weights, mode="sum")

    def _pool_projections(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs @ pool_keys.T``, kept for the last inputs seen without gradients: a held-out set is
        evaluated at every step against a pool that changes only at phase ends. The cache holds the inputs,
        so no other tensor can take their memory while it matches on address, shape and strides."""
        if torch.is_grad_enabled():
            return inputs @ self.pool_keys.T
        cached = self._projections
        same = cached is not None and cached[0].data_ptr() == inputs.data_ptr() and cached[1] is self.pool_keys
        if not (same and cached[0].shape == inputs.shape and cached[0].stride() == inputs.stride()):
            cached = self._projections = (inputs, self.pool_keys, inputs @ self.pool_keys.T)
        return cached[2]

    # --- the memory interface ----------------------------------------------------------------

    def write(self, task: int, adapter: LowRank, head: Head, key: torch.Tensor) -> int:
        """Add the slot's atoms (the columns of ``scale * B`` with the rows of ``A``) as a new group."""
        values, keys = (t.detach().float().clone() for t in adapter)
        for name, tensor in (("adapter", values), ("adapter", keys), ("head_weight", head.weight)):
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name} holds NaN or infinite values; the memory stores only finite adapters")
        self.clock += 1
        position = self._free_position()
        self.groups[position] = AtomGroup(
            keys, values, Head(head.weight.detach().clone(), head.bias.detach().clone()), int(task), self.clock,
            self.clock,
        )  # fmt: skip
        self.occupied[position] = True
        self._pool()
        return position

    def _free_position(self) -> int:
        if not self.occupied.all():
            return int((~self.occupied).nonzero()[0])
        victim = RETENTION_POLICIES[self.retention](self.groups)
        self.groups[victim] = None
        self.occupied[victim] = False
        return victim

    def read(self, position: int) -> Stored:
        raise ValueError(
            "memory='moram' routes every input through its whole pool of atoms; a position cannot be recalled "
            "into a slot (recall is masked: choose fresh or keep)"
        )

    def peek(self, position: int) -> Stored:
        """The group's own atoms as factors (``delta = values @ keys``), and the task's head; a prediction goes
        through the whole pool, not through one group."""
        group = self.groups[position] if 0 <= position < self.capacity else None
        if group is None:
            raise ValueError(f"memory position {position} is empty; occupied positions: {self.positions()}")
        return Stored(Factors(group.values, torch.ones(group.keys.shape[0]), group.keys), group.head)

    def similarities(self, query: torch.Tensor) -> torch.Tensor:
        """-inf everywhere: the pool has no task keys (routing is per input, by the atoms' own keys)."""
        return torch.full((self.capacity,), float("-inf"))

    def position_of(self, task: int) -> int | None:
        """The task's most recent group."""
        latest = [(g.created, p) for p, g in enumerate(self.groups) if g is not None and g.task_label == task]
        return max(latest)[1] if latest else None

    def task_at(self, position: int) -> int | None:
        group = self.groups[position]
        return None if group is None else group.task_label

    def describe(self, position: int) -> str:
        group = self.groups[position]
        if group is None:
            return "empty"
        return f"task {group.task_label}, {group.keys.shape[0]} atoms, {self._group_bytes(group) / 1e3:.1f} kB"

    @staticmethod
    def _group_bytes(group: AtomGroup) -> int:
        return sum(t.numel() * t.element_size() for t in (group.keys, group.values, *group.head))

    @property
    def nbytes(self) -> int:
        """Every atom's key and value, and every group's head."""
        return sum(self._group_bytes(group) for group in self.groups if group is not None)

    # --- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        config = {"capacity": self.capacity, "topk": self.topk, "temperature": self.temperature,
                  "threshold": self.threshold, "retention": self.retention}  # fmt: skip
        groups = [
            None if g is None else {
                "keys": g.keys, "values": g.values, "head_weight": g.head.weight, "head_bias": g.head.bias,
                "task_label": g.task_label, "created": g.created, "last_use": g.last_use, "visits": g.visits,
            }
            for g in self.groups
        ]  # fmt: skip
        save_state(path, MORAM_FORMAT, MORAM_VERSION, {"config": config, "clock": self.clock, "groups": groups})

    @classmethod
    def load(cls, path: str | Path) -> RankOneAtomMemory:
        return load_state(path, MORAM_FORMAT, MORAM_VERSION, "memory", cls._from_state)

    @classmethod
    def _from_state(cls, state: dict) -> RankOneAtomMemory:
        memory = cls(**state["config"])
        if len(state["groups"]) != memory.capacity:
            raise ValueError(f"{len(state['groups'])} groups saved for capacity {memory.capacity}")
        memory.clock = state["clock"]
        for position, item in enumerate(state["groups"]):
            if item is not None:
                head = Head(item.pop("head_weight"), item.pop("head_bias"))
                memory.groups[position] = AtomGroup(item.pop("keys"), item.pop("values"), head, **item)
                memory.occupied[position] = True
        memory._pool()
        return memory
