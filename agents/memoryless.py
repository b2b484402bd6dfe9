"""Memoryless controllers: they never recall a bank entry (except ``random``, by chance)."""

from __future__ import annotations

import numpy as np

from agents.base import Agent, action, register_agent


@register_agent
class FreshAgent(Agent):
    """Every task starts from scratch in the least recently used slot."""

    name = "fresh"
    memoryless = True

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        return action(self.least_recently_used_slot(observation), "fresh")


@register_agent
class KeepAgent(Agent):
    """Naive fine-tuning: every task continues slot 0 as the previous task left it."""

    name = "keep"
    memoryless = True

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        return action(0, "keep")


@register_agent
class RoundRobinAgent(Agent):
    """Slots in turn (0, 1, ..., S-1, 0, ...), each task started fresh."""

    name = "round_robin"
    memoryless = True

    def reset(self) -> None:
        self.turn = 0

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        slot, self.turn = self.turn % self.slots, self.turn + 1
        return action(slot, "fresh")


@register_agent
class RandomAgent(Agent):
    """A uniformly random slot and a uniformly random valid recall choice at each boundary."""

    name = "random"
    memoryless = True

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        recall_mask = info["action_mask"][self.slots :]
        return np.array([self.rng.integers(self.slots), self.rng.choice(np.flatnonzero(recall_mask))])
