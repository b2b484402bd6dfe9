"""The memory interface: what the learner asks of a store of adapters, whatever it keeps inside.

A memory has ``capacity`` positions. Writing a task stores its slot's adapter, head and
key (refreshing the task's own entry when it still has one); reading a position gives back
a low-rank adapter and a head, to load into a slot (a recall) or to predict a task that
holds no slot. Controllers see only similarities and occupancy; the task behind a position
(:meth:`Memory.task_at`) is hidden, for the oracle and for analysis.

A new mechanism is one file with a subclass plus one ``register_memory`` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from nsr_env.lowrank import LowRank
from nsr_env.records import Head, Stored

if TYPE_CHECKING:
    from nsr_env.config import LearnerConfig


class Memory(ABC):
    """A fixed number of positions holding task memories, read back by position.

    ``occupied`` is a ``(capacity,)`` bool tensor that the memory keeps up to date.
    """

    name: ClassVar[str]
    recallable: ClassVar[bool] = True  # a position can be read back into a slot (False: recall is masked)
    routes_per_input: ClassVar[bool] = False  # the memory is part of the adapted layer (see :meth:`adapted`)
    capacity: int
    occupied: torch.Tensor

    @classmethod
    @abstractmethod
    def from_config(cls, config: LearnerConfig, key_dim: int) -> Memory:
        """The memory a learner with ``config`` uses; task keys have ``key_dim`` entries."""

    @abstractmethod
    def write(self, task: int, adapter: LowRank, head: Head, key: torch.Tensor) -> int:
        """Store ``task``'s adapter (``(scale * B, A)``), head and key; return the position written.

        The task's own entry is refreshed in place while it exists; otherwise a new one is
        made, evicting by the memory's retention rule when it is full.
        """

    @abstractmethod
    def read(self, position: int) -> Stored:
        """The adapter and head at ``position`` for a recall: counts as a use (retention sees it)."""

    @abstractmethod
    def peek(self, position: int) -> Stored:
        """The adapter and head at ``position`` without counting a use (evaluation of a task without a slot).

        What it returns is never changed in place afterwards: when what a position stores changes, it
        returns new objects (the learner keeps a slotless task's accuracy while they stay the same)."""

    @abstractmethod
    def similarities(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of a key ``(key_dim,)`` to every position, ``(capacity,)``; -inf where empty."""

    @abstractmethod
    def position_of(self, task: int) -> int | None:
        """The position that holds ``task``'s latest memory, if any (hidden: oracle and analysis)."""

    @abstractmethod
    def task_at(self, position: int) -> int | None:
        """The task whose memory ``position`` holds, or None when empty (hidden: oracle and analysis)."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes stored for all tasks, shared parts included."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the memory to one file, atomically."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> Memory:
        """Read a memory written by :meth:`save`; a damaged file raises an error naming it."""

    def route_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """Per position, how well the stored adapter itself fits ``inputs`` ``(n, in)`` (``key="arrow"``);
        -inf where empty. Only memories that keep per-entry factors can answer."""
        raise ValueError(
            f"memory={self.name!r} cannot score entries by their own factors; use key='input' or key='pooled'"
        )

    def adapted(self, inputs: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
        """For a memory that ``routes_per_input``: the low-rank part of the adapted layer's output ``(m, out)``
        for inputs ``(m, in)``, the memory's own part with a slot's ``A`` ``(r, in)`` and ``B`` ``(out, r)``
        (both may be empty). Every prediction then goes through it."""
        raise NotImplementedError(f"memory={self.name!r} does not route inputs; the learner applies slots itself")

    @property
    def routed_state(self) -> object:
        """For a memory that ``routes_per_input``: an object replaced whenever what :meth:`adapted` computes
        changes (the learner keeps slotless tasks' accuracies while it stays the same)."""
        return None

    def fresh_start(self, rank: int, generator: torch.Generator) -> torch.Tensor | None:
        """The ``A`` factor ``(rank, in)`` a fresh slot starts from, or None for LoRA's random start (a
        memory whose tasks share a subspace starts new ones inside it). ``B`` always starts at zero."""
        return None

    def describe(self, position: int) -> str:
        """One line about ``position`` for the text rendering."""
        task = self.task_at(position)
        return "empty" if task is None else f"task {task}"

    def __len__(self) -> int:
        return int(self.occupied.sum())

    def positions(self) -> list[int]:
        """The occupied positions, in order."""
        return self.occupied.nonzero().flatten().tolist()

    def bytes_per_entry(self) -> float:
        """Mean stored bytes per occupied position (the paper's MB per task)."""
        count = len(self)
        return self.nbytes / count if count else 0.0
