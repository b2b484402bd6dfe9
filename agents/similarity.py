"""The paper's rule: at a task boundary, recall the most similar bank entry if it is similar enough."""

from __future__ import annotations

import numpy as np

from agents.base import Agent, action, register_agent


@register_agent
class SimilarityAgent(Agent):
    """Recall the entry whose key is most similar to the current task's if the cosine
    similarity reaches ``threshold``, else start fresh; the slot is the least recently used.

    The default threshold 0.99 separates a task's own entry (similarity 1: the key is the
    task's mean input) from other tasks' on Split-FashionMNIST (at most 0.96).
    """

    name = "similarity"

    def __init__(self, env, seed: int | None = None, threshold: float = 0.99) -> None:
        super().__init__(env, seed)
        if not -1 <= threshold <= 1:
            raise ValueError(f"threshold={threshold} must be a cosine similarity in [-1, 1]")
        self.threshold = threshold

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        similarity = np.where(
            self.part(observation, "bank_occupied") > 0.5, self.part(observation, "bank_similarity"), -np.inf
        )
        best = int(np.argmax(similarity))
        slot = self.least_recently_used_slot(observation)
        return action(slot, best) if similarity[best] >= self.threshold else action(slot, "fresh")
