"""The protection interface: how training on a shared slot protects the slot's earlier users.

A rule sees each phase start (the task, the slot's other users, the parameters it trains)
and then, at every optimizer step, may add a term to the loss and adjust the parameters
after the step; at each phase end it may keep something of the finished task. A new rule is
one file with a subclass plus one ``register_protection`` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from nsr_env.records import Head, PhaseParameters

if TYPE_CHECKING:
    from nsr_env.config import LearnerConfig


@dataclass(frozen=True, eq=False)
class PhaseStart:
    """A phase as it begins: what a protection rule may protect, and from what."""

    task: int
    others: tuple[int, ...]  # the slot's earlier users, sorted; empty unless the phase kept a shared slot
    parameters: PhaseParameters  # what the phase trains (the head is the shared one under heads="slot")
    heads: dict[int, Head]  # the others' own heads
    shared_head: bool  # heads="slot": the others use the trained head itself
    features: Callable[[], torch.Tensor]  # the task's training features through the slot as it starts (no grad)


@dataclass(frozen=True, eq=False)
class PhaseEnd:
    """A phase as it ends, before its slot is written to the memory."""

    task: int
    # the task's mean training-loss gradients at the slot's final state, computed on demand: with respect to
    # the adapted layer's weight ``(in, out)`` and to the head's weight ``(classes, features)``
    gradients: Callable[[], tuple[torch.Tensor, torch.Tensor]]


class Protection(ABC):
    """A rule for training a slot that other tasks still use."""

    name: ClassVar[str]

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config

    @abstractmethod
    def begin_phase(self, start: PhaseStart) -> None:
        """Take what the rule needs (snapshots, subspaces) as a phase starts."""

    def loss(
        self, loss: torch.Tensor, features: torch.Tensor, batch: torch.Tensor, parameters: PhaseParameters
    ) -> torch.Tensor:
        """The training loss with the rule's term added (``features``: the batch's head features;
        ``batch``: its indices into the task's training set; ``parameters``: the trained parameters
        as this step's graph sees them, for a term through them)."""
        return loss

    def after_step(self, parameters: PhaseParameters) -> None:  # noqa: B027  (optional: most rules only add a loss)
        """Adjust the parameters in place after an optimizer step."""

    def end_phase(self, end: PhaseEnd) -> None:  # noqa: B027  (optional: for rules that keep what a task used)
        """Keep what the rule needs of a finished task (a protected subspace, say) before the slot moves on."""
