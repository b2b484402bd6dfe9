"""``share``: one shared low-rank subspace for every stored adapter; a task keeps only its coefficients (Share).

After Share (Vaidya et al. 2026; public code ankit-vaidya19/Share). The memory keeps two
orthonormal bases, one in the adapted layer's output space (for the ``B`` side of an
adapter) and one in its input space (for the ``A`` side), each of at most ``share_basis``
directions. An entry stores an adapter as coefficients in those bases, ``delta ≈ (C_out L_out)
(C_in L_in)^T``, with the task's head and key as in the SVD bank. At every write the bases are
recomputed as the principal directions of every stored adapter's factors stacked side by side
(the adapters as the memory reconstructs them, plus the new one, exactly), and every entry is
projected onto the new bases: the subspace grows and turns as tasks arrive, and an old entry
loses only what falls outside it. A fresh slot starts inside the input-side basis, as Share's new
tasks start from coefficients on the shared subspace (see :meth:`fresh_start`).

Positions, retention, keys and recall are the SVD bank's; only what an entry stores differs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from nsr_env.lowrank import Factors, compress
from nsr_env.memories.svd import BankEntry, TaskKnowledgeBank

if TYPE_CHECKING:
    from nsr_env.config import LearnerConfig

SHARE_FORMAT = "nsr-env SharedSubspaceMemory"
SHARE_VERSION = 1


def balanced_factors(factors: Factors) -> tuple[torch.Tensor, torch.Tensor]:
    """An adapter's delta ``U S Vh`` as ``(left, right)`` with ``delta = left @ right.T`` and the singular
    values split evenly, ``(U S^1/2, Vh^T S^1/2)``: the factor pair without LoRA's arbitrary gauge."""
    root = factors.S.float().sqrt()
    return factors.U.float() * root, factors.Vh.float().T * root


def principal_basis(stacked: torch.Tensor, size: int) -> torch.Tensor:
    """The top ``size`` left singular vectors of ``stacked`` (d, n), fewer when its numerical rank is lower."""
    if stacked.shape[1] == 0:
        return stacked.new_zeros(stacked.shape[0], 0)
    u, s, _ = torch.linalg.svd(stacked, full_matrices=False)
    rank = int((s > s[0] * max(stacked.shape) * torch.finfo(torch.float32).eps).sum()) if s[0] > 0 else 0
    return u[:, : min(size, rank)].contiguous()


@dataclass(eq=False)
class ShareEntry(BankEntry):
    """A bank entry whose adapter is stored as coefficients on the shared bases; ``factors`` is the
    adapter as they reconstruct it (derived, so not counted in the entry's bytes)."""

    out_coefficients: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # (k_out, rank)
    in_coefficients: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # (k_in, rank)

    @functools.cached_property
    def nbytes(self) -> int:
        tensors = (self.out_coefficients, self.in_coefficients, self.head_weight, self.head_bias, self.key)
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(eq=False)
class SharedSubspaceMemory(TaskKnowledgeBank):
    """At most ``capacity`` adapters stored as coefficients on two shared bases of ``basis_size`` directions."""

    name = "share"
    file_format, file_version, file_noun = SHARE_FORMAT, SHARE_VERSION, "memory"

    basis_size: int = 32
    basis_out: torch.Tensor = field(init=False, repr=False)  # (out, k_out) orthonormal columns
    basis_in: torch.Tensor = field(init=False, repr=False)  # (in, k_in)

    def __post_init__(self) -> None:
        if isinstance(self.basis_size, bool) or not isinstance(self.basis_size, int) or self.basis_size < 1:
            raise ValueError(f"share_basis={self.basis_size!r} must be an integer >= 1")
        if self.float16:
            raise ValueError(
                "bank_float16=True stores an SVD bank's factors in float16; memory='share' stores coefficients on "
                "a shared basis instead. Use bank_float16=False with memory='share'."
            )
        self.energy, self.rank = 1.0, None  # adapters enter losslessly: the shared basis is the compression
        super().__post_init__()
        self.basis_out = torch.zeros(0, 0)
        self.basis_in = torch.zeros(0, 0)

    @classmethod
    def from_config(cls, config: LearnerConfig, key_dim: int) -> SharedSubspaceMemory:
        return cls(
            capacity=config.bank_capacity,
            key_dim=key_dim,
            float16=config.bank_float16,
            retention=config.retention,
            basis_size=config.share_basis,
        )

    def reserve(self, delta, head_weight, head_bias, key, task_label, position=None) -> int:
        position = super().reserve(delta, head_weight, head_bias, key, task_label, position)
        self._rebase()
        return position

    def factors_of(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The balanced ``(left, right)`` factors that the entry at ``position`` reconstructs."""
        entry = self.entries[position]
        return self.basis_out @ entry.out_coefficients, self.basis_in @ entry.in_coefficients

    def _rebase(self) -> None:
        """New bases from every entry's factors stacked side by side, and every entry projected onto them."""
        positions = self.positions()
        pairs = [balanced_factors(self.entries[p].factors) for p in positions]
        self.basis_out = principal_basis(torch.cat([left for left, _ in pairs], dim=1), self.basis_size)
        self.basis_in = principal_basis(torch.cat([right for _, right in pairs], dim=1), self.basis_size)
        for position, (left, right) in zip(positions, pairs, strict=True):
            old = self.entries[position]
            out_coefficients, in_coefficients = self.basis_out.T @ left, self.basis_in.T @ right
            self.entries[position] = self._entry(old, out_coefficients, in_coefficients)

    def _entry(self, old: BankEntry, out_coefficients: torch.Tensor, in_coefficients: torch.Tensor) -> ShareEntry:
        left, right = self.basis_out @ out_coefficients, self.basis_in @ in_coefficients
        factors = compress((left, right.T), energy=1.0)
        return ShareEntry(
            factors, old.head_weight, old.head_bias, old.key, old.task_label, old.created, old.last_use, old.visits,
            out_coefficients.contiguous(), in_coefficients.contiguous(),
        )  # fmt: skip

    def fresh_start(self, rank: int, generator: torch.Generator) -> torch.Tensor | None:
        """A fresh slot's ``A`` inside the input-side basis: random coefficients, rows as long as LoRA's
        default start (mean squared norm 1/3), so a new task trains where earlier tasks already live."""
        k = self.basis_in.shape[1]
        if k == 0:
            return None
        bound = 1 / k**0.5
        coefficients = (torch.rand(rank, k, generator=generator) * 2 - 1) * bound
        return coefficients @ self.basis_in.T

    @property
    def nbytes(self) -> int:
        """Both shared bases, plus every entry's coefficients, head and key."""
        shared = sum(t.numel() * t.element_size() for t in (self.basis_out, self.basis_in))
        return shared + sum(entry.nbytes for entry in self.entries if entry is not None)

    def describe(self, position: int) -> str:
        entry = self.entries[position]
        if entry is None:
            return "empty"
        return (
            f"task {entry.task_label}, coefficients {tuple(entry.in_coefficients.shape)} on a shared basis, "
            f"{entry.nbytes / 1e3:.1f} kB, visits {entry.visits}, last use {entry.last_use}"
        )

    # --- persistence -------------------------------------------------------------------

    def _state(self) -> dict:
        config = {k: getattr(self, k) for k in ("capacity", "key_dim", "float16", "retention", "basis_size")}
        entries = [
            None if e is None else {
                "out_coefficients": e.out_coefficients, "in_coefficients": e.in_coefficients,
                "head_weight": e.head_weight, "head_bias": e.head_bias, "key": e.key, "task_label": e.task_label,
                "created": e.created, "last_use": e.last_use, "visits": e.visits,
            }
            for e in self.entries
        ]  # fmt: skip
        return {
            "config": config, "clock": self.clock, "entries": entries, "task_positions": self._task_positions,
            "basis_out": self.basis_out, "basis_in": self.basis_in,
        }  # fmt: skip

    @classmethod
    def _from_state(cls, state: dict) -> SharedSubspaceMemory:
        memory = cls(**state["config"])
        if len(state["entries"]) != memory.capacity:
            raise ValueError(f"{len(state['entries'])} entries saved for capacity {memory.capacity}")
        memory.clock = state["clock"]
        memory.basis_out, memory.basis_in = state["basis_out"], state["basis_in"]
        for position, item in enumerate(state["entries"]):
            if item is None:
                continue
            blank = BankEntry(Factors(torch.zeros(0, 0), torch.zeros(0), torch.zeros(0, 0)), item["head_weight"],
                              item["head_bias"], item["key"], item["task_label"], item["created"],
                              item["last_use"], item["visits"])  # fmt: skip
            memory.entries[position] = memory._entry(blank, item["out_coefficients"], item["in_coefficients"])
            memory.keys[position] = torch.nn.functional.normalize(item["key"].float(), dim=0)
            memory.occupied[position] = True
        memory._task_positions = {int(task): int(position) for task, position in state["task_positions"].items()}
        return memory
