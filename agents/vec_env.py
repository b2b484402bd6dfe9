"""stable-baselines3 on the batched environment: a ``VecEnv`` over :class:`~nsr_env.envs.vector.NSRVectorEnv`.

SB3 2.x speaks its own ``VecEnv`` protocol (lists of info dicts, ``terminal_observation``,
reset in the same step), not Gymnasium's ``VectorEnv``. :class:`BatchedVecEnv` translates:
it runs the vector env with ``AutoresetMode.SAME_STEP``, seeds sub-environment i with
``seed + i`` as ``DummyVecEnv`` does, and serves ``get_attr``, ``env_method`` (MaskablePPO's
``action_masks`` included) from the sub-environments. So PPO and MaskablePPO, their callbacks and
``VecNormalize`` run on it unchanged, and see the same episodes as on a ``DummyVecEnv`` of
single environments with the same seed (within float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from nsr_env.envs.vector import NSRVectorEnv


def make_batched(env_id: str, num_envs: int, **env_kwargs) -> BatchedVecEnv:
    """``num_envs`` environments of ``env_id`` as one batched SB3 ``VecEnv``."""
    venv = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs,
    )  # fmt: skip
    return BatchedVecEnv(venv)


class BatchedVecEnv(VecEnv):
    """An SB3 ``VecEnv`` over an :class:`NSRVectorEnv` that resets in the same step."""

    def __init__(self, venv: NSRVectorEnv) -> None:
        if venv.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("BatchedVecEnv needs an NSRVectorEnv made with autoreset_mode=AutoresetMode.SAME_STEP")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = None if all(seed is None for seed in self._seeds) else self._seeds
        options = self._options[0] or None  # one options dict for all: what the vector env takes
        observations, infos = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = self._split(infos)
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = np.asarray(actions).reshape(self.num_envs, -1)

    def step_wait(self):
        observations, rewards, terminations, truncations, infos = self.venv.step(self.actions)
        dones = terminations | truncations
        split = self._split(infos)
        for i in np.flatnonzero(dones):
            handed_over = ("final_obs", "final_info")
            self.reset_infos[i] = {key: value for key, value in split[i].items() if key not in handed_over}
            split[i] = {
                **split[i]["final_info"],
                "terminal_observation": split[i]["final_obs"],
                "TimeLimit.truncated": bool(truncations[i] and not terminations[i]),
            }
        for i in np.flatnonzero(~dones):
            split[i]["TimeLimit.truncated"] = False
        return observations, rewards.astype(np.float32), dones, split

    def _split(self, infos: dict) -> list[dict]:
        """Gymnasium's dict of arrays (with ``_key`` masks) as one dict per sub-environment."""
        split: list[dict] = [{} for _ in range(self.num_envs)]
        for key, values in infos.items():
            if key.startswith("_"):
                continue
            present = infos[f"_{key}"]
            if key == "final_info":
                inner = self._split(values)
                for i in np.flatnonzero(present):
                    split[i][key] = inner[i]
                continue
            for i in np.flatnonzero(present):
                value = values[i]
                split[i][key] = value.item() if isinstance(value, np.generic) else value
        return split

    def close(self) -> None:
        self.venv.close()

    def _targets(self, indices) -> list:
        return [self.venv.envs[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(env, attr_name) for env in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        for env in self._targets(indices):
            setattr(env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(env, method_name)(*method_args, **method_kwargs) for env in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        return [False for _ in self._targets(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [env.render() for env in self.venv.envs]
