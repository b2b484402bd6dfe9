"""The batched environment: the same episodes as single environments, Gymnasium's vector conventions, SB3 on it.

Tolerance: a sub-environment's observations and rewards must equal those of a single environment
with the same seed and actions within ``ATOL`` (the batched and the one-row decision steps are the
same code on different batch sizes; on this machine they agree exactly).
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from gymnasium.vector import AutoresetMode
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecCheckNan
from test_envs import OFFLINE_IDS, small

import nsr_env  # noqa: F401  (registers the ids)
from agents.ppo import train_ppo
from agents.vec_env import BatchedVecEnv, make_batched
from nsr_env.envs.vector import NSRVectorEnv
from nsr_env.learner import FRESH, KEEP, ContinualLearner, TaskData
from nsr_env.memories import MEMORIES
from nsr_env.protection import PROTECTIONS
from nsr_env.records import PhaseParameters
from nsr_env.steps import AdaptedFeatures, PhaseRows, decision_steps

ATOL = 1e-5
SYNTHETIC = "nsr_env/NSR-Synthetic-v0"


def valid_actions(masks: np.ndarray, slots: int, rng: np.random.Generator) -> np.ndarray:
    """A random valid [slot, recall] for each row of ``masks``: recalls, keeps and fresh starts all happen."""
    return np.array([[rng.choice(np.flatnonzero(m[:slots])), rng.choice(np.flatnonzero(m[slots:]))] for m in masks])


def assert_same_as_singles(env_id: str, seed: int, num_envs: int = 3, steps: int | None = None, **kwargs) -> None:
    """Step the vector env and ``num_envs`` single envs (seeds ``seed + i``) with the same random valid actions
    for a whole episode (or ``steps``), and compare everything they return."""
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    singles = [gym.make(env_id, **kwargs).unwrapped for _ in range(num_envs)]
    observations, infos = venv.reset(seed=seed)
    for i, env in enumerate(singles):
        observation, info = env.reset(seed=seed + i)
        np.testing.assert_allclose(observations[i], observation, atol=ATOL)
        assert infos["hidden_task_id"][i] == info["hidden_task_id"]
    rng = np.random.default_rng(seed)
    slots = venv.single_action_space.nvec[0]
    for _ in range(steps or venv.unwrapped.scenario.num_steps):
        masks = venv.unwrapped.action_masks()
        np.testing.assert_array_equal(masks, np.stack([env.action_masks() for env in singles]))
        actions = valid_actions(masks, slots, rng)
        observations, rewards, terminations, truncations, infos = venv.step(actions)
        for i, env in enumerate(singles):
            observation, reward, terminated, truncated, info = env.step(actions[i])
            np.testing.assert_allclose(observations[i], observation, atol=ATOL)
            assert rewards[i] == pytest.approx(reward, abs=ATOL)
            assert (terminations[i], truncations[i]) == (terminated, truncated)
            for key in ("recall", "slot", "trained_task_id", "recalled_task_id", "recovery_steps", "bank_size"):
                assert infos[key][i] == info[key], key
            np.testing.assert_array_equal(infos["action_mask"][i], info["action_mask"])
    venv.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_trajectories_equal_single_ones_for_three_seeds_on_default(seed):
    assert_same_as_singles("nsr_env/NSR-v0", seed, cycles=1, phase_length=8)


@pytest.mark.parametrize("env_id", OFFLINE_IDS)
def test_every_offline_id_batches_to_the_same_episode(env_id):
    assert_same_as_singles(env_id, seed=5, num_envs=2, **small(env_id, cycles=1))


@pytest.mark.parametrize("protect", sorted(PROTECTIONS))
@pytest.mark.parametrize("memory", sorted(MEMORIES))
def test_every_memory_and_protection_batches_to_the_same_episode(memory, protect):
    assert_same_as_singles(SYNTHETIC, seed=3, memory=memory, protect=protect, cycles=2, heads="slot")


def test_default_is_the_vector_entry_point_and_spaces_are_batched():
    venv = gym.make_vec("nsr_env/NSR-v0", num_envs=4)
    assert isinstance(venv, NSRVectorEnv)
    single = gym.make("nsr_env/NSR-v0")
    assert venv.single_observation_space == single.observation_space
    assert venv.observation_space.shape == (4, *single.observation_space.shape)
    assert venv.action_space.shape == (4, 2)
    observations, _ = venv.reset(seed=0)
    assert observations in venv.observation_space
    assert venv.unwrapped.action_masks().shape == (4, sum(single.action_space.nvec))


def test_sub_environments_pass_the_gymnasium_checker_and_sb3_sees_no_nan():
    venv = gym.make_vec(SYNTHETIC, num_envs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(venv.unwrapped.envs[1], skip_render_check=True)  # sub-environments have no spec
    checked = VecCheckNan(make_batched(SYNTHETIC, 2), raise_exception=True)
    checked.reset()
    for _ in range(venv.unwrapped.scenario.num_steps + 2):  # across an automatic reset
        checked.step(np.array([checked.action_space.sample() for _ in range(2)]))


def finish_episode(venv, rng):
    """Step until the episode ends (every sub-environment ends together); the last step's returns."""
    slots = venv.single_action_space.nvec[0]
    while True:
        returned = venv.step(valid_actions(venv.unwrapped.action_masks(), slots, rng))
        if returned[2].all():
            return returned


def test_next_step_autoreset_returns_the_first_observation_with_zero_reward_and_ignores_the_action():
    venv = gym.make_vec(SYNTHETIC, num_envs=2)
    single = gym.make(SYNTHETIC).unwrapped
    venv.reset(seed=7)
    single.reset(seed=7)
    finish_episode(venv, np.random.default_rng(0))
    observations, rewards, terminations, truncations, infos = venv.step(np.array([[99, 99], [99, 99]]))
    first, info = single.reset()  # a single env's next episode, from its own generator: the same seed stream
    np.testing.assert_allclose(observations[0], first, atol=ATOL)
    assert rewards.tolist() == [0.0, 0.0] and not terminations.any() and not truncations.any()
    assert infos["hidden_task_id"][0] == info["hidden_task_id"] and infos["phase"].tolist() == [0, 0]
    _, _, terminations, *_ = venv.step(np.array([[0, 0], [0, 0]]))  # the new episode's first step, a fresh start
    assert not terminations.any() and venv.unwrapped.envs[0].step_index == 1


def test_same_step_autoreset_hands_over_the_final_observation_and_info():
    venv = gym.make_vec(SYNTHETIC, num_envs=2, autoreset_mode=AutoresetMode.SAME_STEP)
    venv.reset(seed=7)
    observations, _, terminations, _, infos = finish_episode(venv, np.random.default_rng(0))
    assert terminations.all() and infos["_final_obs"].all()
    assert infos["final_info"]["phase"].tolist() == [venv.unwrapped.scenario.num_phases - 1] * 2
    assert (observations[:, venv.unwrapped.envs[0].observation_layout["task_boundary"]] == 1).all()  # new episode
    assert not np.array_equal(infos["final_obs"][0], observations[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": 0}, "num_envs=0 must be an integer >= 1"),
        ({"num_envs": 2, "autoreset_mode": "whenever"}, "autoreset_mode must be one of"),
    ],
)
def test_bad_arguments_raise_one_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NSRVectorEnv(scenario="synthetic", **kwargs)


def test_actions_of_the_wrong_shape_and_steps_before_reset_are_refused():
    venv = NSRVectorEnv(2, "synthetic")
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros((2, 2), dtype=np.int64))
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"num_envs=2 rows of \[slot, recall\]"):
        venv.step(np.zeros((3, 2), dtype=np.int64))


def test_sb3_first_rollout_on_the_batched_env_equals_the_dummy_vec_env_one():
    """Same seeds, same policy: PPO's first rollout buffer is the same on both, so training starts the same."""
    buffers = []
    for env in (make_vec_env(SYNTHETIC, n_envs=2, seed=0), make_batched(SYNTHETIC, 2)):
        model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
        model.learn(64)
        buffers.append((model.rollout_buffer.observations.copy(), model.rollout_buffer.rewards.copy()))
    np.testing.assert_allclose(buffers[0][0], buffers[1][0], atol=ATOL)
    np.testing.assert_allclose(buffers[0][1], buffers[1][1], atol=ATOL)


def test_maskable_ppo_trains_on_the_batched_env_through_train_ppo(tmp_path):
    path = train_ppo(SYNTHETIC, 256, tmp_path, vector=4, n_steps=32, batch_size=32, n_epochs=1, tensorboard=False)
    model = MaskablePPO.load(path, device="cpu")
    env = gym.make(SYNTHETIC).unwrapped
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, action_masks=env.action_masks())
    assert env.action_masks()[action[0]] and env.action_masks()[env.action_space.nvec[0] + action[1]]
    assert (tmp_path / "config.json").read_text().count('"vector": 4') == 1


def test_train_ppo_refuses_vector_beside_n_envs(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        train_ppo(SYNTHETIC, 64, tmp_path, vector=2, n_envs=2)


def test_batched_vec_env_needs_same_step_autoreset():
    with pytest.raises(ValueError, match="SAME_STEP"):
        BatchedVecEnv(gym.make_vec(SYNTHETIC, num_envs=2))


# --- the batched decision step ----------------------------------------------------------------


def synthetic_tasks(classes: list[int], seed: int = 0) -> list[TaskData]:
    """SYNTHETIC random tasks (Gaussian inputs, a random frozen layer) with the given numbers of classes."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(12, 6, generator=generator)
    tasks = []
    for index, count in enumerate(classes):
        inputs = [torch.randn(n, 3, 6, generator=generator) for n in (40, 20, 10)]
        labels = [torch.randint(count, (n,), generator=generator) for n in (40, 20, 10)]
        tasks.append(
            TaskData(
                f"synthetic[{index}]", count, inputs[0], inputs[0] @ weight.T, labels[0], inputs[1],
                inputs[1] @ weight.T, labels[1], inputs[2], inputs[2] @ weight.T, labels[2], inputs[0].mean((0, 1)),
            )
        )  # fmt: skip
    return tasks


def test_batched_decision_steps_equal_one_by_one_with_tasks_of_different_class_counts():
    """Rows of a PhaseRows padded to the most classes: a 2-class task beside a 4-class one learns as alone."""
    from nsr_env.config import LearnerConfig

    tasks = synthetic_tasks([2, 4, 3])
    config = LearnerConfig(heads="task", eval_size=None, batch_size=8)

    def learners():
        return [ContinualLearner(tasks, "relu_mean", config, seed=seed) for seed in range(3)]

    alone, batched = learners(), learners()
    rows = batched[0].phase_rows(3)
    for row, learner in enumerate(batched):
        learner.share_rows(rows, row)
    expected, got = [], []
    for phase, recall in enumerate((FRESH, KEEP)):
        for i, (a, b) in enumerate(zip(alone, batched, strict=True)):
            a.begin_phase((i + phase) % 3, 0, recall)
            b.begin_phase((i + phase) % 3, 0, recall)
        for _ in range(6):
            expected.append([a.decision_step() for a in alone])
            got.append(decision_steps(batched))
        for a, b in zip(alone, batched, strict=True):
            a.end_phase(), b.end_phase()
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=ATOL)
    for a, b in zip(alone, batched, strict=True):
        torch.testing.assert_close(b.slots.A, a.slots.A, atol=ATOL, rtol=0)


def test_batched_steps_of_some_rows_leave_the_others_as_they_are():
    from nsr_env.config import LearnerConfig

    tasks = synthetic_tasks([2, 2])
    batched = [ContinualLearner(tasks, "relu_mean", LearnerConfig(), seed=seed) for seed in range(2)]
    alone = ContinualLearner(tasks, "relu_mean", LearnerConfig(), seed=1)
    rows = batched[0].phase_rows(2)
    for row, learner in enumerate(batched):
        learner.share_rows(rows, row)
        learner.begin_phase(row, 0, FRESH)
    alone.begin_phase(1, 0, FRESH)
    decision_steps(batched)
    before = batched[0].phase_parameters().B.clone()
    steps = [decision_steps(batched[1:])[0] for _ in range(3)]
    expected = [alone.decision_step() for _ in range(4)][1:]
    torch.testing.assert_close(batched[0].phase_parameters().B, before, atol=0, rtol=0)
    np.testing.assert_allclose(np.array(steps), np.array(expected), atol=ATOL)
    with pytest.raises(ValueError, match="distinct rows"):
        decision_steps([batched[1], batched[1]])


def test_phase_rows_adam_matches_torch_adam():
    """The hand-written batched Adam against torch.optim.Adam on the same gradients, one row starting later."""
    rows = PhaseRows(2, 2, 3, 4, 2, lr=0.01, batch=(1, 1, 3, 4))
    generator = torch.Generator().manual_seed(0)
    starts = [PhaseParameters(*(torch.randn(part.shape[1:], generator=generator) for part in rows.parameters))
              for _ in range(2)]  # fmt: skip
    leaves = [[t.clone().requires_grad_() for t in start] for start in starts]
    optimizers = [torch.optim.Adam(leaf, lr=0.01) for leaf in leaves]
    rows.load(0, starts[0])
    for step in range(5):
        if step == 2:
            rows.load(1, starts[1])
        active = [0] if step < 2 else [0, 1]
        grads = [[torch.randn(t.shape, generator=generator) for t in starts[0]] for _ in range(2)]
        for row in active:
            for part, grad in zip(rows.parameters, grads[row], strict=True):
                part.grad[row] = grad
            for leaf, grad in zip(leaves[row], grads[row], strict=True):
                leaf.grad = grad.clone()
            optimizers[row].step()
        rows.adam_step(active)
    for row in range(2):
        for part, leaf in zip(rows.parameters, leaves[row], strict=True):
            torch.testing.assert_close(part.detach()[row], leaf.detach(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pool_kind", ["relu6_mean", "relu_mean", "identity"])
def test_hand_written_backward_equals_autograd(pool_kind):
    from nsr_env.backbones.base import POOLS

    generator = torch.Generator().manual_seed(0)
    positions = 1 if pool_kind == "identity" else 3
    inputs = torch.randn(2, 5, positions, 6, generator=generator)
    base = torch.randn(2, 5, positions, 8, generator=generator) * 4
    A = torch.randn(2, 2, 6, generator=generator).requires_grad_()
    B = torch.randn(2, 8, 2, generator=generator).requires_grad_()
    weights = torch.randn(2, 5, 8, generator=generator)
    (AdaptedFeatures.apply(inputs, base, A, B, 0.5, pool_kind) * weights).sum().backward()
    ours = A.grad.clone(), B.grad.clone()
    A.grad = B.grad = None
    out = base.flatten(1, 2) + 0.5 * (inputs.flatten(1, 2) @ A.transpose(1, 2)) @ B.transpose(1, 2)
    (POOLS[pool_kind](out.view(10, positions, 8)).view(2, 5, 8) * weights).sum().backward()
    torch.testing.assert_close(ours[0], A.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1], B.grad, atol=1e-5, rtol=1e-5)
