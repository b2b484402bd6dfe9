"""Run controllers on environments and collect one tidy row per decision step."""

from __future__ import annotations

from collections.abc import Iterable

import gymnasium as gym
import numpy as np
import pandas as pd

from agents.base import AGENTS, Agent

COLUMNS = [
    "scenario", "agent", "seed", "episode", "step", "task", "phase", "slot", "recall", "accuracy", "regret",
    "recovery_steps", "task_boundary", "bank_size", "bank_bytes", "retrieval_rank", "relevant_recall",
]  # fmt: skip


def make(name: str, env: gym.Env, **kwargs) -> Agent:
    """The controller registered as ``name`` for ``env`` (e.g. ``make("similarity", env, threshold=0.95)``)."""
    if name not in AGENTS:
        raise ValueError(f"agent name {name!r} is unknown; registered: {sorted(AGENTS)}")
    return AGENTS[name](env, **kwargs)


def run_episode(controller: Agent, env: gym.Env, seed: int, episode: int = 0) -> tuple[list[dict], np.ndarray]:
    """Episode ``episode`` of seed ``seed`` (episode 0 resets the environment with the seed,
    later ones continue its random stream): a row per decision step (``COLUMNS`` plus
    ``recalled_task``) and the accuracy matrix R (R[i, j]: held-out accuracy of task j
    after phase i, read from the learner at each phase end; analysis only)."""
    controller.reset()
    observation, info = env.reset(seed=seed if episode == 0 else None)
    inner = env.unwrapped
    rows, matrix, step, done = [], [], 0, False
    while not done:
        task = info["hidden_task_id"]
        observation, _, terminated, truncated, info = env.step(controller.act(observation, info))
        rows.append(
            {
                "scenario": inner.scenario.name, "agent": controller.name, "seed": seed, "episode": episode,
                "step": step, "task": task, "phase": info["phase"], "slot": info["slot"], "recall": info["recall"],
                "accuracy": info["accuracy"], "regret": info["regret"], "recovery_steps": info["recovery_steps"],
                "task_boundary": info["task_boundary"], "bank_size": info["bank_size"],
                "bank_bytes": info["bank_bytes"], "retrieval_rank": info["retrieval_rank"],
                "relevant_recall": info["relevant_recall"], "recalled_task": info["recalled_task_id"],
            }
        )  # fmt: skip
        step, done = step + 1, terminated or truncated
        if step % inner.scenario.phase_length == 0:
            matrix.append(inner.learner.evaluate_all())
    return rows, np.array(matrix)


def evaluate(
    agent: str | Agent,
    env_id: str,
    seeds: Iterable[int],
    episodes: int = 1,
    agent_kwargs: dict | None = None,
    **env_kwargs,
) -> pd.DataFrame:
    """Run ``agent`` (a registered name, or an instance to reuse) for ``episodes`` episodes per seed.

    Seed s resets the environment with ``seed=s`` for its first episode (later episodes
    continue its random stream) and seeds a named agent with s. ``task`` is the hidden
    task of each step, recorded for analysis; the agent never sees it (except the oracle).
    """
    rows = []
    for seed in seeds:
        env = gym.make(env_id, **env_kwargs)
        if isinstance(agent, str):
            controller = make(agent, env, seed=seed, **(agent_kwargs or {}))
        else:
            controller = agent
            controller.attach(env)
        for episode in range(episodes):
            rows += run_episode(controller, env, seed, episode)[0]
        env.close()
    return pd.DataFrame(rows, columns=[*COLUMNS, "recalled_task"])
