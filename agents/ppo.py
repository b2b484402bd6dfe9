"""PPO and MaskablePPO controllers (stable-baselines3 / sb3-contrib): training and acting.

Plain PPO does not see the action mask, so it trains and acts on environments that
coerce masked actions (``strict=False``, the default): inside a phase any action means
"continue", and recalling an empty bank position means "fresh". MaskablePPO samples
only valid actions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from agents.base import Agent, register_agent
from agents.vec_env import make_batched
from nsr_env import measures
from nsr_env.threads import one_torch_thread


@dataclass(frozen=True)
class ObservationNormalizer:
    """The running observation statistics a model was trained with (SB3's ``VecNormalize``), frozen:
    ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``. Saved beside the model as
    ``normalization.npz``; an agent loads it with the model."""

    mean: np.ndarray
    var: np.ndarray
    clip: float
    epsilon: float

    FILE: ClassVar[str] = "normalization.npz"

    @classmethod
    def of(cls, venv: VecNormalize) -> ObservationNormalizer:
        stats = venv.obs_rms
        return cls(stats.mean.copy(), stats.var.copy(), float(venv.clip_obs), float(venv.epsilon))

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        scaled = (observation - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def save(self, folder: Path) -> None:
        np.savez(folder / self.FILE, mean=self.mean, var=self.var, clip=self.clip, epsilon=self.epsilon)

    @classmethod
    def load(cls, folder: Path) -> ObservationNormalizer | None:
        """The statistics saved in ``folder``, or None when the model there was trained on raw observations."""
        path = folder / cls.FILE
        if not path.is_file():
            return None
        with np.load(path) as stored:
            return cls(stored["mean"], stored["var"], float(stored["clip"]), float(stored["epsilon"]))


@register_agent
class PPOAgent(Agent):
    """Acts with a trained stable-baselines3 PPO model, given as ``model=`` (with ``normalizer=`` if it was
    trained on normalised observations) or loaded from ``path=`` (with the statistics saved beside it)."""

    name = "ppo"
    needs_training = True
    algorithm = PPO
    policy = "MlpPolicy"

    def __init__(
        self,
        env,
        seed: int | None = None,
        path: str | Path | None = None,
        model=None,
        deterministic: bool = True,
        normalizer: ObservationNormalizer | None = None,
    ):
        super().__init__(env, seed)
        if (path is None) == (model is None):
            raise ValueError(f"agent {self.name!r} needs path= (a model saved by `nsr train-ppo`) or model=, not both")
        if model is None:
            path = Path(path)
            if not path.is_file() and not path.with_suffix(".zip").is_file():
                raise ValueError(f"path={str(path)!r}: no saved model there; train one with `nsr train-ppo --out DIR`")
            config = path.parent / "config.json"
            trained_as = json.loads(config.read_text()).get("agent") if config.is_file() else None
            if trained_as not in (None, self.name):
                raise ValueError(
                    f"path={str(path)!r} holds a {trained_as} model ({config}); load it with "
                    f"agents.make({trained_as!r}, env, path=...)"
                )
            model = self.algorithm.load(path, device="cpu")
            normalizer = ObservationNormalizer.load(path.parent)
        self.model, self.deterministic, self.normalizer = model, deterministic, normalizer
        self.attach(env)

    def attach(self, env) -> None:
        """As :meth:`Agent.attach`, and check that the model fits the environment's spaces."""
        super().attach(env)
        model = getattr(self, "model", None)
        if model is None:  # called from Agent.__init__, before the model is loaded
            return
        if model.observation_space.shape != self.env.observation_space.shape or not np.array_equal(
            model.action_space.nvec, self.env.action_space.nvec
        ):
            raise ValueError(
                f"the model was trained for observations {model.observation_space.shape} and actions "
                f"{model.action_space.nvec.tolist()}, this environment has {self.env.observation_space.shape} and "
                f"{self.env.action_space.nvec.tolist()}: train it on the same slots and bank_capacity"
            )

    @classmethod
    def train(cls, env_id: str, timesteps: int, out: str | Path, **kwargs) -> Path:
        """Train a model for this agent with :func:`train_ppo` (``nsr sweep`` calls this); returns its path."""
        return train_ppo(env_id, timesteps, out, agent=cls.name, **kwargs)

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        return self.act(observation, info)  # the policy decides at every step, boundaries included

    def observe(self, observation: np.ndarray) -> np.ndarray:
        return observation if self.normalizer is None else self.normalizer(observation)

    def act(self, observation: np.ndarray, info: dict) -> np.ndarray:
        action, _ = self.model.predict(self.observe(observation), deterministic=self.deterministic)
        return action


@register_agent
class MaskablePPOAgent(PPOAgent):
    """Acts with a trained sb3-contrib MaskablePPO model, sampling only valid actions."""

    name = "maskable_ppo"
    algorithm = MaskablePPO

    def act(self, observation: np.ndarray, info: dict) -> np.ndarray:
        action, _ = self.model.predict(
            self.observe(observation), action_masks=info["action_mask"], deterministic=self.deterministic
        )
        return action


@register_agent
class RecurrentPPOAgent(PPOAgent):
    """Acts with a trained sb3-contrib RecurrentPPO model (an LSTM policy: history in the policy). Like
    plain PPO it does not see the mask; masked actions are coerced."""

    name = "recurrent_ppo"
    algorithm = RecurrentPPO
    policy = "MlpLstmPolicy"

    def reset(self) -> None:
        self.state, self.episode_start = None, np.ones(1, dtype=bool)

    def act(self, observation: np.ndarray, info: dict) -> np.ndarray:
        action, self.state = self.model.predict(
            self.observe(observation), state=self.state, episode_start=self.episode_start,
            deterministic=self.deterministic,
        )  # fmt: skip
        self.episode_start = np.zeros(1, dtype=bool)
        return action


LEARNED = {cls.name: cls for cls in (PPOAgent, MaskablePPOAgent, RecurrentPPOAgent)}
"""The learned agents by name; each class names its algorithm and policy."""


class ContinualLearningLogger(BaseCallback):
    """Logs the continual-learning figures of finished episodes to tensorboard (``cl/...``):
    cumulative regret, mean accuracy, and mean recovery steps over returning visits
    (censored as everywhere, by :mod:`nsr_env.measures`)."""

    def _on_training_start(self) -> None:
        self.phase_length = self.training_env.get_attr("scenario", [0])[0].phase_length
        self.episodes = [self._new_episode() for _ in range(self.training_env.num_envs)]

    @staticmethod
    def _new_episode() -> dict:
        return {"regret": 0.0, "accuracy": [], "tasks": [], "recovery": []}  # tasks, recovery: one per phase

    def _on_step(self) -> bool:
        for index, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"], strict=True)):
            episode = self.episodes[index]
            if info["task_boundary"]:
                episode["tasks"].append(info["trained_task_id"])
                episode["recovery"].append(info["recovery_steps"])
            elif episode["recovery"]:
                episode["recovery"][-1] = info["recovery_steps"]
            episode["regret"] += info["regret"]
            episode["accuracy"].append(info["accuracy"])
            if done:
                self.logger.record_mean("cl/cumulative_regret", episode["regret"])
                self.logger.record_mean("cl/mean_accuracy", float(np.mean(episode["accuracy"])))
                recovery = measures.returning_recovery(episode["tasks"], episode["recovery"], self.phase_length)
                if recovery.size:
                    self.logger.record_mean("cl/mean_recovery_steps", float(recovery.mean()))
                self.episodes[index] = self._new_episode()
        return True


RECIPE = {
    "n_steps": 256,
    "batch_size": 64,
    "gamma": 0.99,
    "ent_coef": 0.0,
    "learning_rate": 3e-4,
    "normalize": True,
}
"""The defaults of :func:`train_ppo` and ``nsr train-ppo``; ``benchmarks/ppo_recipe.py`` draws the learning
curves that chose them (see the README)."""
RECIPE_TIMESTEPS = 40_000
"""``nsr train-ppo``'s default budget."""


def train_ppo(
    env_id: str,
    timesteps: int,
    out: str | Path,
    *,
    seed: int = 0,
    n_envs: int = 1,
    vector: int | None = None,
    agent: str = "maskable_ppo",
    env_kwargs: dict | None = None,
    eval_freq: int | None = None,
    checkpoint_freq: int | None = None,
    progress_bar: bool = False,
    tensorboard: bool = True,
    callback: BaseCallback | None = None,
    **settings,
) -> Path:
    """Train a learned ``agent`` (``"maskable_ppo"``, ``"ppo"`` or ``"recurrent_ppo"``) on ``env_id`` and save
    it to ``out/model.zip``; returns that path.

    ``out`` also receives ``config.json`` (what was trained, for reuse), tensorboard logs
    under ``out/tensorboard`` with the ``cl/...`` figures, checkpoints under
    ``out/checkpoints`` and the best model of the periodic evaluation under ``out/best``.
    ``n_envs > 1`` runs the environments in subprocesses; ``vector=N`` instead runs N environments in this
    process as one batched environment (:mod:`agents.vec_env`), their decision steps batched: the same
    episodes as ``n_envs=N``, faster. ``settings`` override :data:`RECIPE`:
    (Maskable)PPO's keyword arguments, ``policy_kwargs``, and ``normalize`` (train on observations
    normalised by running statistics, SB3's ``VecNormalize``, saved beside the model as
    ``normalization.npz`` for the agent that loads it). ``callback`` runs beside the logging ones.
    Training runs on one torch thread (:func:`nsr_env.threads.one_torch_thread`).
    """
    settings = {**RECIPE, **settings}
    normalize, policy_kwargs = settings.pop("normalize"), settings.pop("policy_kwargs", None)
    if timesteps < 1 or n_envs < 1:
        raise ValueError(f"timesteps={timesteps} and n_envs={n_envs} must be at least 1")
    if vector is not None and (vector < 1 or n_envs != 1):
        raise ValueError(
            f"vector={vector} with n_envs={n_envs}: give vector=N (N >= 1 batched environments in this process) "
            "or n_envs=N (subprocesses), not both"
        )
    if agent not in LEARNED:
        raise ValueError(f"agent={agent!r} is not a learned agent; choose one of {sorted(LEARNED)}")
    maskable = agent == "maskable_ppo"
    algorithm, policy = LEARNED[agent].algorithm, LEARNED[agent].policy
    env_kwargs = dict(env_kwargs or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if vector is None:
        vec_cls = SubprocVecEnv if n_envs > 1 else DummyVecEnv
        importable_id = env_id if ":" in env_id else f"nsr_env:{env_id}"  # subprocesses import nsr_env to find the id
        env = make_vec_env(importable_id, n_envs=n_envs, seed=seed, vec_env_cls=vec_cls, env_kwargs=env_kwargs)
    else:
        env = make_batched(env_id, vector, **env_kwargs)
        env.seed(seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000, env_kwargs=env_kwargs)
    if normalize:  # the evaluation env reads the training statistics (EvalCallback syncs them)
        env = VecNormalize(env, norm_obs=True, norm_reward=False)
        eval_env = VecNormalize(eval_env, norm_obs=True, norm_reward=False, training=False)
    model = algorithm(
        policy,
        env,
        seed=seed,
        device="cpu",
        verbose=0,
        tensorboard_log=str(out / "tensorboard") if tensorboard else None,
        policy_kwargs=policy_kwargs,
        **settings,
    )
    episode_steps = gym.make(env_id, **env_kwargs).unwrapped.scenario.num_steps
    eval_every = max(1, (eval_freq or 4 * episode_steps) // env.num_envs)
    evaluation = (MaskableEvalCallback if maskable else EvalCallback)(
        eval_env, n_eval_episodes=1, eval_freq=eval_every, best_model_save_path=str(out / "best"), verbose=0
    )
    checkpoints = CheckpointCallback(
        save_freq=max(1, (checkpoint_freq or 10 * episode_steps) // env.num_envs), save_path=str(out / "checkpoints")
    )
    callbacks = CallbackList([ContinualLearningLogger(), evaluation, checkpoints, *([callback] if callback else [])])
    with one_torch_thread():  # subprocess environments (n_envs > 1) set their own threads
        model.learn(timesteps, callback=callbacks, progress_bar=progress_bar)
    path = out / "model.zip"
    model.save(path)
    if normalize:
        ObservationNormalizer.of(env).save(out)
    config = {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "timesteps": timesteps,
        "seed": seed,
        "n_envs": n_envs,
        "vector": vector,
        "agent": agent,
        "ppo_kwargs": settings,
        "policy_kwargs": policy_kwargs,
        "normalize": normalize,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    env.close()
    eval_env.close()
    return path
