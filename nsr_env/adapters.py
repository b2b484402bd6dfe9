"""S rank-r LoRA slots on the backbone's one adapted layer.

Slot s changes the adapted layer's output to ``W0 x + b0 + scale * B_s A_s x`` with
``scale = alpha / r``. The frozen part ``W0 x + b0`` comes from the feature cache, so
only the low-rank path is computed here.
"""

from __future__ import annotations

import math

import torch

from nsr_env.lowrank import Factors


class LoRASlots:
    """``A`` (S, r, in) and ``B`` (S, out, r); standard LoRA init: A uniform, B zero."""

    def __init__(self, slots: int, rank: int, in_features: int, out_features: int, alpha: float | None = None):
        if slots < 1:
            raise ValueError(f"slots={slots} must be at least 1")
        if not 1 <= rank <= min(in_features, out_features):
            limit = min(in_features, out_features)
            raise ValueError(f"rank={rank} must be between 1 and {limit}, the smaller side of the adapted layer")
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.A = torch.zeros(slots, rank, in_features)
        self.B = torch.zeros(slots, out_features, rank)

    @property
    def count(self) -> int:
        return len(self.A)

    def _init_A(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        bound = 1 / math.sqrt(self.A.shape[2])  # kaiming_uniform(a=sqrt(5)), as in LoRA implementations
        return (torch.rand(rows, self.A.shape[2], generator=generator) * 2 - 1) * bound

    def reset(self, slot: int, generator: torch.Generator, A: torch.Tensor | None = None) -> None:
        """Fresh start: ``B = 0`` (the slot adds nothing yet), ``A`` random, or the given ``(rank, in)`` start."""
        self.A[slot] = self._init_A(self.rank, generator) if A is None else A
        self.B[slot] = 0

    def adapter(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot's weight change as the unformed pair ``(scale * B, A)``."""
        return self.scale * self.B[slot], self.A[slot]

    def delta(self, slot: int) -> torch.Tensor:
        """The slot's weight change ``scale * B @ A`` (out, in)."""
        return self.scale * self.B[slot] @ self.A[slot]

    def load(self, slot: int, factors: Factors, generator: torch.Generator) -> None:
        """Warm start from compressed factors: ``scale * B A = U diag(S) Vh`` exactly.

        With k < r components, the remaining r - k directions start as in a fresh slot
        (random A rows, zero B columns), so they can still learn.
        """
        k = min(factors.rank, self.rank)
        root = (factors.S[:k].float() / self.scale).sqrt()
        self.A[slot] = self._init_A(self.rank, generator)
        self.B[slot] = 0
        self.A[slot, :k] = root[:, None] * factors.Vh[:k].float()
        self.B[slot, :, :k] = factors.U[:, :k].float() * root[None, :]
