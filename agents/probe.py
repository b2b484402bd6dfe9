"""The feedback rule: recall the candidate that best classifies a few labelled images of the incoming task."""

from __future__ import annotations

import numpy as np

from agents.base import Agent, action, register_agent

DEFAULT_MARGIN = 0.5


@register_agent
class ProbeAgent(Agent):
    """At a boundary, recall the candidate with the best zero-shot accuracy on the visit's labelled
    probe (``probe_labels=True``) if it beats chance by ``margin`` of the way to perfect
    (``accuracy >= chance + margin * (1 - chance)``: 0.75 for two classes with the default 0.5),
    else start fresh; ties go to the more similar candidate; least recently used slot.

    Input similarity alone cannot tell a task from one with the same images and other labels;
    a few labelled images can. The margin is fixed, not tuned on any stream: a recalled entry
    should classify the new task clearly better than a coin, or it is no warm start.
    """

    name = "probe"

    def __init__(self, env, seed: int | None = None, margin: float = DEFAULT_MARGIN) -> None:
        super().__init__(env, seed)
        if not 0 <= margin <= 1:
            raise ValueError(f"margin={margin} must be in [0, 1]: a share of the way from chance to perfect accuracy")
        self.margin = margin

    def attach(self, env) -> None:
        super().attach(env)
        if not self.env.scenario.probe_labels:
            raise ValueError(
                "agent 'probe' reads each candidate's accuracy on a labelled probe: make the env with "
                "probe_labels=True (it needs candidates >= 1 and probe_size >= 1)"
            )

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        slot = self.least_recently_used_slot(observation)
        accuracy = np.where(
            self.part(observation, "candidate_present") > 0.5, self.part(observation, "candidate_probe_accuracy"), -1
        )
        best = int(np.argmax(accuracy))  # the first of equal maxima: candidates come most similar first
        chance = float(self.part(observation, "probe_chance")[0])
        return action(slot, best) if accuracy[best] >= chance + self.margin * (1 - chance) else action(slot, "fresh")
