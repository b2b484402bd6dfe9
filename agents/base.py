"""The controller interface and the registry behind ``agents.make``.

A controller sees what the environment shows (the observation, and ``info`` without its
hidden fields) and returns ``[slot, recall]``. A rule implements :meth:`Agent.place`, the
decision at a task boundary; inside a phase :meth:`Agent.act` sends the one valid
action, "continue". Learned policies (PPO) override :meth:`Agent.act` and act at every step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import gymnasium as gym
import numpy as np

from nsr_env.envs.nsr import NSREnv
from nsr_env.recall import Recall

AGENTS: dict[str, type[Agent]] = {}
CAPABILITIES = ("memoryless", "needs_training", "reads_hidden")
"""What the sweep records about each agent and the report groups by, instead of agent names."""


def register_agent(cls: type[Agent]) -> type[Agent]:
    """Class decorator: make the controller available to ``agents.make(cls.name, ...)``; a duplicate name raises."""
    if cls.name in AGENTS:
        raise ValueError(f"agent {cls.name!r} is already registered (by {AGENTS[cls.name].__qualname__}); rename it")
    AGENTS[cls.name] = cls
    return cls


class Agent(ABC):
    """A controller for one NSR environment (the same or a copy of the one it acts in).

    Capabilities, declared per class: ``memoryless`` (a baseline that decides without reading
    what the memory holds: it never recalls, or only at random), ``needs_training`` (a learned
    policy: the class provides ``train``, and the sweep trains it before it acts) and
    ``reads_hidden`` (reads hidden task labels: a reference, not a controller one could deploy).
    """

    name: ClassVar[str]
    memoryless: ClassVar[bool] = False
    needs_training: ClassVar[bool] = False
    reads_hidden: ClassVar[bool] = False

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.attach(env)
        self.rng = np.random.default_rng(seed)

    def attach(self, env: gym.Env) -> None:
        """Act in ``env`` from now on (``agents.evaluate`` attaches a reused controller to each new env)."""
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, NSREnv):
            raise ValueError(
                f"env must be an NSR environment (gym.make('nsr_env/...')), got {type(unwrapped).__name__}"
            )
        self.env = unwrapped
        self.layout = unwrapped.observation_layout
        self.slots = unwrapped.scenario.slots

    @classmethod
    def train(cls, env_id: str, timesteps: int, out, **kwargs):
        """Train a model for this agent and return its path (learned agents, ``needs_training``, override it)."""
        raise NotImplementedError(f"agent {cls.name!r} does not train; only agents with needs_training = True do")

    def reset(self) -> None:  # noqa: B027  (an optional hook: most rules keep no per-episode state)
        """Forget per-episode state (called at the start of each episode)."""

    def act(self, observation: np.ndarray, info: dict) -> np.ndarray:
        """The action ``[slot, recall]`` for the decision the observation describes."""
        return self.place(observation, info) if self.at_boundary(observation) else self.continue_action(observation)

    @abstractmethod
    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        """The rule itself: where the new phase's task goes, at a task boundary."""

    # --- helpers for the rules ------------------------------------------------------------------

    def part(self, observation: np.ndarray, name: str) -> np.ndarray:
        return observation[self.layout[name]]

    def at_boundary(self, observation: np.ndarray) -> bool:
        return bool(self.part(observation, "task_boundary")[0] > 0.5)

    def continue_action(self, observation: np.ndarray) -> np.ndarray:
        return np.array([int(np.argmax(self.part(observation, "slot_current"))), Recall.KEEP])

    def most_similar(self, observation: np.ndarray) -> tuple[int | None, float]:
        """The recall choice of the most similar memory entry and its similarity (None, -inf on an empty
        memory): candidate 0 with ``candidates`` (they come sorted), else the most similar position."""
        if self.env.scenario.candidates:
            present = self.part(observation, "candidate_present")[0] > 0.5
            return (0, float(self.part(observation, "candidate_similarity")[0])) if present else (None, -np.inf)
        occupied = self.part(observation, "bank_occupied") > 0.5
        similarity = np.where(occupied, self.part(observation, "bank_similarity"), -np.inf)
        best = int(np.argmax(similarity))
        return (best, float(similarity[best])) if occupied[best] else (None, -np.inf)

    def least_recently_used_slot(self, observation: np.ndarray) -> int:
        """The stalest slot (never-used slots first, then by last training step; ties: lowest index)."""
        return int(np.argmax(self.part(observation, "slot_staleness")))


def action(slot: int, recall: str | int) -> np.ndarray:
    """``[slot, recall]`` from ``"fresh"``, ``"keep"`` or a recall choice: candidate j (``candidates`` > 0)
    or memory position j."""
    choice = {"fresh": Recall.FRESH, "keep": Recall.KEEP}.get(recall) if isinstance(recall, str) else None
    return np.array([slot, int(choice) if choice is not None else Recall.of_position(recall)])
