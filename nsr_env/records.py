"""Typed records passed between the learner, the memories, the protection rules and the environment.

Named tuples: they unpack and index like the tuples they replace, and say what each part is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from nsr_env.lowrank import Factors


class Head(NamedTuple):
    """A task's linear classifier on the pooled features."""

    weight: torch.Tensor  # (classes, features)
    bias: torch.Tensor  # (classes,)


class Stored(NamedTuple):
    """What a memory gives back for a position: the adapter's weight change as factors, and a head."""

    factors: Factors
    head: Head


class PhaseParameters(NamedTuple):
    """What one phase trains: its slot's LoRA factors and its task's head (copies, with gradients)."""

    A: torch.Tensor  # (rank, in)
    B: torch.Tensor  # (out, rank)
    head_weight: torch.Tensor
    head_bias: torch.Tensor


class Prediction(NamedTuple):
    """How a task is predicted now: ``source`` ("slot", "bank" or "base"), a low-rank path and a head.

    The adapted layer computes ``W0 x + b0 + scale * B A x``; a "base" prediction has empty factors.
    """

    source: str
    A: torch.Tensor
    B: torch.Tensor
    head_weight: torch.Tensor
    head_bias: torch.Tensor


class Evaluation(NamedTuple):
    """Held-out accuracy of a task and the source of its prediction."""

    accuracy: float
    source: str


class StepResult(NamedTuple):
    """One decision step: the task's held-out accuracy after it, and the last training loss."""

    accuracy: float
    loss: float
