"""NSRVectorEnv: N independent episodes of one scenario in one process, their decision steps batched.

``gym.make_vec("nsr_env/NSR-v0", num_envs=16, vectorization_mode="vector_entry_point")``
(the default mode for these ids). Each sub-environment is an :class:`~nsr_env.envs.nsr.NSREnv`
with its own seed, schedule, slots and memory; they share the scenario's read-only tensors,
and their learners train in rows of one :class:`~nsr_env.steps.PhaseRows`, so that one
``step`` runs the N decision steps as one batched program (:func:`~nsr_env.steps.decision_steps`).
Everything else (actions, masks, observations, rewards, infos) is the single environment's
own code, so a sub-environment's trajectory equals that of ``gym.make`` with the same seed,
within float rounding (tested: see ``tests/test_vector.py`` for the tolerance).

Gymnasium 1.x conventions: ``reset(seed=s)`` seeds sub-environment i with ``s + i``; infos
are dicts of arrays with ``_key`` masks; episodes reset automatically, by default at the
next step (``AutoresetMode.NEXT_STEP``: that step ignores the action of a finished
sub-environment and returns its first observation with reward 0), or at once with
``autoreset_mode=AutoresetMode.SAME_STEP`` (the finished episode's last observation and
info go to ``info["final_obs"]`` and ``info["final_info"]``), which stable-baselines3 expects.
``action_masks()`` is batched, one row per sub-environment, for MaskablePPO.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from nsr_env.envs.nsr import NSREnv
from nsr_env.scenarios import Scenario
from nsr_env.steps import decision_steps

AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)


class NSRVectorEnv(VectorEnv):
    """``num_envs`` NSREnv episodes stepped together; see the module docstring."""

    def __init__(
        self,
        num_envs: int,
        scenario: str | Scenario = "default",
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        strict: bool = False,
        cache: str | Path | None = None,
        data_root: str | Path | None = None,
        **overrides,
    ) -> None:
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be an integer >= 1")
        try:
            autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            autoreset_mode = None
        if autoreset_mode not in AUTORESET_MODES:
            choices = [mode.value for mode in AUTORESET_MODES]
            raise ValueError(f"autoreset_mode must be one of {choices} (gymnasium.vector.AutoresetMode)")
        options = {"render_mode": render_mode, "strict": strict, "cache": cache, "data_root": data_root}
        first = NSREnv(scenario, **options, **overrides)
        self.envs = [first] + [NSREnv(first.scenario, **options, data=first.data) for _ in range(num_envs - 1)]
        self.num_envs = num_envs
        self.scenario = first.scenario
        self.render_mode = render_mode
        self.metadata = {**first.metadata, "autoreset_mode": autoreset_mode}
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, num_envs)
        self.action_space = batch_space(first.action_space, num_envs)
        self.rows = None  # the learners' PhaseRows, made at the first reset
        self._finished = np.zeros(num_envs, dtype=bool)  # NEXT_STEP: these reset at the next step

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset every sub-environment: ``seed`` an int (sub-environment i gets ``seed + i``), a list of one seed
        (or None) per sub-environment, or None."""
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        elif len(seed) == self.num_envs:
            seeds = list(seed)
        else:
            raise ValueError(f"seed= has {len(seed)} seeds for num_envs={self.num_envs}: give one per sub-environment")
        super().reset(seed=seed if isinstance(seed, int) else None)
        observations, infos = [], {}
        for i, env_seed in enumerate(seeds):
            observation, info = self._reset_one(i, env_seed, options)
            observations.append(observation)
            infos = self._add_info(infos, info, i)
        self._finished[:] = False
        return np.stack(observations), infos

    def _reset_one(self, index: int, seed: int | None = None, options: dict | None = None):
        env = self.envs[index]
        observation, info = env.reset(seed=seed, options=options)
        if self.rows is None:
            self.rows = env.learner.phase_rows(self.num_envs)
        env.learner.share_rows(self.rows, index)
        return observation, info

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValueError(
                f"actions of shape {actions.shape} do not fit this vector env: it takes {self.action_space.shape} "
                f"(num_envs={self.num_envs} rows of [slot, recall])"
            )
        if self.rows is None:
            raise RuntimeError("call reset() before step()")
        stepping = [i for i in range(self.num_envs) if not self._finished[i]]
        placed = {i: self.envs[i].place(actions[i]) for i in stepping}
        results = decision_steps([self.envs[i].learner for i in stepping])
        observations = np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype)
        rewards = np.zeros(self.num_envs)
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
        infos: dict = {}
        accuracies = dict(zip(stepping, (result.accuracy for result in results), strict=True))
        for i in range(self.num_envs):
            if self._finished[i]:
                observation, info = self._reset_one(i)
            else:
                observation, rewards[i], terminations[i], truncations[i], info = self.envs[i].advance(
                    placed[i], accuracies[i]
                )
                if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and (terminations[i] or truncations[i]):
                    final_observation, final_info = observation, info
                    observation, info = self._reset_one(i)
                    info = {**info, "final_obs": final_observation, "final_info": final_info}
            observations[i] = observation
            infos = self._add_info(infos, info, i)
        if self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
            self._finished = terminations | truncations
        return observations, rewards, terminations, truncations, infos

    def action_masks(self) -> np.ndarray:
        """Valid choices of each sub-environment, one row each ([slot] + [recall]), as MaskablePPO expects."""
        return np.stack([env.action_masks() for env in self.envs])

    def render(self) -> tuple | None:
        """Each sub-environment's frame (see :meth:`NSREnv.render`), or None without a ``render_mode``."""
        if self.render_mode is None:
            return None
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()
