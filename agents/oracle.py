"""The reference: recall the true task's own entry. The only controller that reads hidden fields."""

from __future__ import annotations

import numpy as np

from agents.base import Agent, action, register_agent


@register_agent
class OracleAgent(Agent):
    """At a boundary, recall the bank entry of ``info["hidden_task_id"]`` if the bank still
    holds one (read from the environment's bank labels) and the interface offers it (with
    ``candidates``, among the candidates), else start fresh; least recently used slot."""

    name = "oracle"
    reads_hidden = True

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        slot = self.least_recently_used_slot(observation)
        position = self.env.learner.entry_of(info["hidden_task_id"])
        code = None if position is None else self.env.recall_code(position)
        return action(slot, "fresh") if code is None else np.array([slot, code])
