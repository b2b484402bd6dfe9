"""``eblora``: a shared slot learns its new task in a balanced, projected update that spares earlier users.

After EBLoRA (Gu et al. 2026; public code haodotgu/EBLoRA). At every phase end the rule keeps
the finished task's protected subspaces, as EBLoRA's gradient extraction does (GPM's energy
rule): the fewest input-side singular vectors of the task's mean gradient with respect to the
adapted layer's weight that hold ``eblora_energy`` (0.99) of its energy, and, with a shared
head (``heads="slot"``), the same for the head's weight on the feature side. When a later task
keeps a slot that earlier tasks use, its update is constrained after every optimizer step, as
EBLoRA's post-step projection and retraction are:

- the change of ``A`` is projected off the earlier users' input subspace ``F`` (``dA F = 0``),
  and ``B`` changes only where that cannot reach them (``dB`` off the span of ``A0 F``; in
  practice ``B`` is held), so ``delta x`` is unchanged for every ``x`` in ``span(F)``;
- the new update ``B0 dA`` is retracted to balanced directions and one scale: its singular
  values are set to their root mean square (EBLoRA's energy-balanced ``s U V^T``);
- with a shared head, the change of the head's weight is projected off the earlier users'
  feature subspace (the bias is free).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from nsr_env.protection.base import PhaseEnd, PhaseStart, Protection
from nsr_env.records import PhaseParameters

if TYPE_CHECKING:
    from nsr_env.config import LearnerConfig


def energy_basis(matrix: torch.Tensor, energy: float) -> torch.Tensor:
    """The fewest left singular vectors of ``matrix`` (d, n) whose squared singular values hold ``energy``
    of the total; ``(d, 0)`` for a zero matrix."""
    u, s, _ = torch.linalg.svd(matrix.double(), full_matrices=False)
    squares = s**2
    if squares.sum() == 0:
        return matrix.new_zeros(matrix.shape[0], 0)
    keep = int((squares.cumsum(0) / squares.sum() < energy).sum()) + 1
    return u[:, :keep].float()


def union_basis(bases: list[torch.Tensor]) -> torch.Tensor:
    """An orthonormal basis of the span of several bases with the same rows (near-dependent directions dropped)."""
    stacked = torch.cat(bases, dim=1)
    if stacked.shape[1] == 0:
        return stacked
    u, s, _ = torch.linalg.svd(stacked, full_matrices=False)
    return u[:, : int((s > 1e-6 * max(1.0, float(s[0]))).sum())]


def off(change: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``change`` (rows in the basis' space) with its components in ``span(basis)`` removed."""
    return change - (change @ basis) @ basis.T


class EnergyBalancedProjection(Protection):
    name = "eblora"

    def __init__(self, config: LearnerConfig) -> None:
        super().__init__(config)
        self.inputs: dict[int, torch.Tensor] = {}  # task -> (in, k) protected input directions
        self.features: dict[int, torch.Tensor] = {}  # task -> (features, k) protected head directions
        self.start: PhaseParameters | None = None

    def end_phase(self, end: PhaseEnd) -> None:
        layer, head = end.gradients()
        self.inputs[end.task] = energy_basis(layer, self.config.eblora_energy)
        self.features[end.task] = energy_basis(head.T, self.config.eblora_energy)

    def begin_phase(self, start: PhaseStart) -> None:
        protected = [u for u in start.others if u in self.inputs]
        if not protected:
            self.start = None
            return
        self.start = PhaseParameters(*(t.detach().clone() for t in start.parameters))
        self.input_basis = union_basis([self.inputs[u] for u in protected])
        self.reach = union_basis([self.start.A @ self.input_basis])  # (rank, q): what old inputs reach through A0
        self.head_basis = union_basis([self.features[u] for u in protected]) if start.shared_head else None

    def after_step(self, parameters: PhaseParameters) -> None:
        if self.start is None:
            return
        A0, B0, W0 = self.start.A, self.start.B, self.start.head_weight
        change = off(parameters.A - A0, self.input_basis)
        parameters.A.copy_(A0 + self._balanced(B0, change))
        parameters.B.copy_(B0 + off(parameters.B - B0, self.reach))
        if self.head_basis is not None and self.head_basis.shape[1]:
            parameters.head_weight.copy_(W0 + off(parameters.head_weight - W0, self.head_basis))

    @staticmethod
    def _balanced(B0: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """``change`` of ``A`` such that ``B0 change`` keeps its directions and its non-zero singular values
        become equal (their root mean square); unchanged where ``B0`` has dependent columns (nothing to balance
        through). The balanced change stays in the row space of ``change``, so off the protected inputs."""
        _, r = torch.linalg.qr(B0)
        diagonal = r.diagonal().abs()
        if diagonal.min() <= 1e-6 * max(float(diagonal.max()), 1e-12):
            return change
        u, s, vh = torch.linalg.svd(r @ change, full_matrices=False)
        kept = s > 1e-6 * max(float(s[0]), 1e-12)
        if not kept.any():
            return change
        level = s[kept].square().mean().sqrt()
        balanced = (u[:, kept] * level) @ vh[kept]
        return torch.linalg.solve_triangular(r, balanced, upper=True)
