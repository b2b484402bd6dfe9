"""``distill``: knowledge distillation towards the slot's other users' outputs as the sharing began.

At the phase start each other user's logits on the current task's training inputs are
snapshotted; every step adds ``distill_weight * T^2 * KL(snapshot || now)`` at temperature
``T = distill_temperature`` (Hinton et al. 2015; LwF). With a shared head (``heads="slot"``)
there is one term, through the trained head itself.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from nsr_env.protection.base import PhaseStart, Protection
from nsr_env.records import Head, PhaseParameters


class Distillation(Protection):
    name = "distill"

    def begin_phase(self, start: PhaseStart) -> None:
        # (head, logits) per term; head None: the trained head itself (heads="slot"), taken from each step's graph
        self.terms: list[tuple[Head | None, torch.Tensor]] = []
        if self.config.distill_weight == 0 or not start.others:
            return
        with torch.no_grad():
            features = start.features()
            if start.shared_head:
                weight, bias = start.parameters.head_weight, start.parameters.head_bias
                self.terms = [(None, features @ weight.T + bias)]
            else:
                self.terms = [(start.heads[u], features @ start.heads[u].weight.T + start.heads[u].bias)
                              for u in start.others]  # fmt: skip

    def loss(
        self, loss: torch.Tensor, features: torch.Tensor, batch: torch.Tensor, parameters: PhaseParameters
    ) -> torch.Tensor:
        temperature, weight = self.config.distill_temperature, self.config.distill_weight
        for head, snapshot in self.terms:
            other_weight, other_bias = (parameters.head_weight, parameters.head_bias) if head is None else head
            student = F.log_softmax((features @ other_weight.T + other_bias) / temperature, dim=1)
            teacher = F.softmax(snapshot[batch] / temperature, dim=1)
            loss = loss + weight * temperature**2 * F.kl_div(student, teacher, reduction="batchmean")
        return loss
