"""Low-rank factors of an adapter's weight change, and their truncated SVD.

Shared by the LoRA slots (a warm start loads factors) and the memories (which store them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ENERGY_SLACK = 1e-5  # relative float32 rounding allowed in the energy an energy threshold may drop

LowRank = tuple[torch.Tensor, torch.Tensor]
"""``(left, right)`` standing for the matrix ``left @ right``: a LoRA's ``(scale * B, A)``."""


@dataclass(frozen=True, eq=False)
class Factors:
    """Truncated SVD of a delta: ``delta ≈ U @ diag(S) @ Vh``."""

    U: torch.Tensor  # (out, k)
    S: torch.Tensor  # (k,)
    Vh: torch.Tensor  # (k, in)

    @property
    def rank(self) -> int:
        return len(self.S)

    def delta(self) -> torch.Tensor:
        return (self.U.float() * self.S.float()) @ self.Vh.float()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.U, self.S, self.Vh))


def _delta_shape(delta: torch.Tensor | LowRank) -> tuple[int, int]:
    """(out, in) of a delta matrix or of a ``(left, right)`` pair; a clear error for anything else."""
    if isinstance(delta, torch.Tensor) and delta.dim() == 2:
        return tuple(delta.shape)
    if (
        isinstance(delta, tuple)
        and len(delta) == 2
        and all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in delta)
    ):
        (out, inner), (inner_right, in_) = delta[0].shape, delta[1].shape
        if inner == inner_right:
            return out, in_
    shapes = tuple(delta.shape) if isinstance(delta, torch.Tensor) else [tuple(getattr(t, "shape", ())) for t in delta]
    raise ValueError(f"delta has shape {shapes}; compress needs a 2-D (out, in) weight change or a (left, right) pair")


def _svd(delta: torch.Tensor | LowRank) -> tuple[torch.Tensor, ...]:
    """Thin SVD of ``delta``, or of ``left @ right`` given as the pair, without forming the product:
    QR of both factors, then the SVD of the small r x r core (exact, and ~100x cheaper for a LoRA)."""
    if isinstance(delta, torch.Tensor):
        return torch.linalg.svd(delta.detach().float(), full_matrices=False)
    left, right = (t.detach().float() for t in delta)
    q_left, r_left = torch.linalg.qr(left)
    q_right, r_right = torch.linalg.qr(right.T)
    u, s, vh = torch.linalg.svd(r_left @ r_right.T)
    return q_left @ u, s, vh @ q_right.T


def compress(
    delta: torch.Tensor | LowRank,
    energy: float | None = None,
    rank: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Factors:
    """Truncated SVD of ``delta`` (a matrix, or a pair ``(left, right)`` standing for
    ``left @ right``, as a LoRA's ``(scale * B, A)``): keep a fixed ``rank``, or the fewest components whose
    squared singular values reach the fraction ``energy`` of the total (Eckart–Young: the
    dropped components' energy is exactly the squared Frobenius error). The energy they
    may drop, ``(1 - energy) * total``, gets a relative ``ENERGY_SLACK`` so that rounding at
    an exact boundary adds no component, while ``energy=1`` stays lossless. Components below
    the numerical-rank tolerance (``max(shape) * eps * largest``) are always dropped, so a
    zero delta compresses to rank 0. The factors own compact storage of the kept part only.
    """
    if (energy is None) == (rank is None):
        raise ValueError("compress needs exactly one of energy= (a fraction in (0, 1]) or rank= (an integer >= 0)")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"energy={energy} must be in (0, 1]")
    if rank is not None and rank < 0:
        raise ValueError(f"rank={rank} must be >= 0")
    shape = _delta_shape(delta)
    u, s, vh = _svd(delta)
    nonzero = int((s > s[0] * max(shape) * torch.finfo(torch.float32).eps).sum()) if len(s) else 0
    if rank is not None:
        keep = min(rank, nonzero)
    else:
        squares = s.double() ** 2
        dropped = squares.flip(0).cumsum(0).flip(0)  # dropped[k]: energy left out by keeping k components
        allowed = (1 - energy) * squares.sum() * (1 + ENERGY_SLACK)
        keep = min(int((dropped > allowed).sum()), nonzero)
    if dtype == torch.float16 and keep and s[0] > torch.finfo(torch.float16).max:
        raise ValueError(
            f"delta's largest singular value {s[0].item():.4g} overflows float16; store this bank in float32"
        )

    def own(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)

    return Factors(own(u[:, :keep]), own(s[:keep]), own(vh[:keep]))


def arrow_score(factors: Factors, inputs: torch.Tensor) -> float:
    """How much of ``inputs`` (``(n, in)``) an adapter's row space captures: the Arrow router's score.

    Arrow (Ostapenko et al. 2024) routes an input to the LoRA expert whose top right-singular
    vector it aligns with best. Here all kept components count, weighted by their share of the
    adapter's energy: ``mean_x sqrt(sum_j w_j <v_j, x/|x|>^2)`` with ``w_j = s_j^2 / sum s^2``,
    in [0, 1]; an adapter with no component scores 0.
    """
    if factors.rank == 0:
        return 0.0
    energy = factors.S.float() ** 2
    weights = energy / energy.sum()
    directions = torch.nn.functional.normalize(inputs.float(), dim=1) @ factors.Vh.float().T  # (n, k)
    return float((directions**2 @ weights).sqrt().mean())
