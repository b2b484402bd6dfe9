"""Conformance of every registered environment id that runs offline, and the environment's own contract."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from gymnasium.wrappers import RecordEpisodeStatistics
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

import nsr_env  # noqa: F401  (registers the ids)
from nsr_env.envs import ENV_IDS, NSREnv
from nsr_env.scenarios import SCENARIOS

OFFLINE_IDS = [env_id for env_id, scenario in ENV_IDS.items() if not SCENARIOS[scenario].online]
FAST = {"cycles": 1}  # fewer steps per episode where a test runs whole episodes
LIBRARY = {"pairs", "rotated", "traps", "mixed", "long"}
SMALL_LIBRARY = {  # real images, small subsets: the full library is built by `nsr prepare --library`, not by tests
    "train_per_class": 20, "eval_per_class": 10, "probe_per_class": 16, "tasks_per_cycle": 4, "phase_length": 5,
    "bank_capacity": 4,
}  # fmt: skip


def small(env_id: str, **overrides) -> dict:
    """Overrides that keep a test on ``env_id`` fast: library scenarios on small subsets of their tasks."""
    return ({**SMALL_LIBRARY, "cycles": 2} if ENV_IDS[env_id] in LIBRARY else {}) | overrides


def fast(env_id: str) -> dict:
    """As :func:`small`, with one pass over the stream (fewer steps where a test runs whole episodes)."""
    return small(env_id, cycles=1)


def test_every_named_scenario_has_a_registered_id():
    named = {"default", "idealised", "synthetic", "split_cifar100", "five_datasets", *LIBRARY}
    assert set(ENV_IDS.values()) == named
    assert ENV_IDS["nsr_env/NSR-v0"] == "default" and ENV_IDS["nsr_env/NSR-Idealised-v0"] == "idealised"
    assert set(OFFLINE_IDS) == {
        env_id for env_id, name in ENV_IDS.items() if name not in {"split_cifar100", "five_datasets"}
    }
    assert all(env_id in gym.registry for env_id in ENV_IDS)


@pytest.mark.parametrize("env_id", OFFLINE_IDS)
def test_gymnasium_and_sb3_checkers_pass_without_warnings(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(gym.make(env_id, **small(env_id)).unwrapped)
        sb3_check_env(gym.make(env_id, **small(env_id)))


def rollout(env, seed: int, steps: int | None = None):
    """Observations, rewards and infos of one episode (or ``steps`` steps) under seeded random actions."""
    observation, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [(observation, 0.0, info)]
    for _ in range(steps or env.unwrapped.scenario.num_steps):
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((observation, reward, info))
        if terminated or truncated:
            break
    return trace


def same_trace(a, b) -> bool:
    def same_info(x, y):
        return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)

    return len(a) == len(b) and all(
        np.array_equal(oa, ob) and ra == rb and same_info(ia, ib)
        for (oa, ra, ia), (ob, rb, ib) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("env_id", OFFLINE_IDS)
def test_same_seed_same_actions_same_episode_and_another_seed_differs(env_id):
    first, second = (rollout(gym.make(env_id, **fast(env_id)), seed=5) for _ in range(2))
    assert same_trace(first, second)
    assert not same_trace(first, rollout(gym.make(env_id, **fast(env_id)), seed=6))


@pytest.mark.parametrize("env_id", OFFLINE_IDS)
def test_episode_shape_spaces_and_stable_info_dtypes(env_id):
    env = gym.make(env_id, **fast(env_id))
    trace = rollout(env, seed=0)
    scenario = env.unwrapped.scenario
    assert len(trace) == scenario.num_steps + 1
    for observation, reward, _ in trace:
        assert env.observation_space.contains(observation) and reward <= 0
    types = {key: type(value) for key, value in trace[1][2].items()}
    assert all({key: type(value) for key, value in info.items()} == types for _, _, info in trace[1:])
    required = {"accuracy", "regret", "recovery_steps", "task_boundary", "bank_size", "bank_bytes", "hidden_task_id"}
    assert required <= types.keys()
    boundaries = [info["task_boundary"] for _, _, info in trace[1:]]
    assert sum(boundaries) == scenario.num_phases and boundaries[0]
    assert trace[-1][2]["bank_size"] == scenario.tasks_per_cycle  # one entry per task, none evicted (K >= M)


@pytest.mark.parametrize("env_id", OFFLINE_IDS)
def test_a_pickled_env_continues_identically(env_id):
    env = gym.make(env_id, **small(env_id))  # 7 + 15 steps: more than one pass over a small library stream
    rollout(env, seed=2, steps=7)
    clone = pickle.loads(pickle.dumps(env))
    env.action_space.seed(9)
    clone.action_space.seed(9)
    for _ in range(15):
        action = env.action_space.sample()
        assert clone.action_space.sample().tolist() == action.tolist()
        a, b = env.step(action), clone.step(action)
        assert np.array_equal(a[0], b[0]) and a[1:4] == b[1:4]
        assert a[4].keys() == b[4].keys() and all(np.array_equal(a[4][k], b[4][k]) for k in a[4])


def test_gymnasium_sync_vector_env_and_sb3_subprocess_vec_env():
    vector = gym.make_vec("nsr_env/NSR-Synthetic-v0", num_envs=2, vectorization_mode="sync", **FAST)
    observations, _ = vector.reset(seed=0)
    assert observations.shape == (2, *vector.single_observation_space.shape)
    observations, rewards, *_ = vector.step(vector.action_space.sample())
    assert rewards.shape == (2,)
    vector.close()
    # "nsr_env:" makes gym.make import nsr_env (and so register the ids) inside each subprocess
    subprocess = make_vec_env("nsr_env:nsr_env/NSR-Synthetic-v0", 2, seed=0, vec_env_cls=SubprocVecEnv, env_kwargs=FAST)
    observations = subprocess.reset()
    for _ in range(3):
        observations, rewards, _, infos = subprocess.step(np.array([subprocess.action_space.sample()] * 2))
    assert observations.shape[0] == 2 and len(infos) == 2 and "accuracy" in infos[0]
    subprocess.close()


def test_record_episode_statistics_sums_the_rewards_to_minus_the_cumulative_regret():
    env = RecordEpisodeStatistics(gym.make("nsr_env/NSR-Synthetic-v0", **FAST))
    trace = rollout(env, seed=1)
    statistics = trace[-1][2]["episode"]
    assert statistics["l"] == len(trace) - 1
    assert statistics["r"] == pytest.approx(-sum(info["regret"] for _, _, info in trace[1:]), abs=1e-6)


def test_keyword_arguments_override_scenario_fields_by_name():
    env = gym.make("nsr_env/NSR-v0", tasks_per_cycle=3, cycles=2, phase_length=5, slots=1, rank=2, bank_capacity=3)
    scenario = env.unwrapped.scenario
    assert (scenario.tasks_per_cycle, scenario.cycles, scenario.phase_length) == (3, 2, 5)
    assert env.action_space.nvec.tolist() == [1, 2 + 3]
    with pytest.raises(ValueError, match="no field 'slot'"):
        gym.make("nsr_env/NSR-v0", slot=1)


def test_masks_follow_the_phase_and_the_bank():
    env = gym.make("nsr_env/NSR-Synthetic-v0", **FAST).unwrapped
    _, info = env.reset(seed=0)
    S = env.scenario.slots
    assert np.array_equal(info["action_mask"], env.action_masks())
    assert env.action_masks()[:S].all() and env.action_masks()[S:].tolist() == [True, True] + [False] * 8
    _, _, _, _, info = env.step(np.array([1, 0]))  # fresh in slot 1: now inside the phase
    assert info["action_mask"].tolist() == [False, True, False, True] + [False] * 8
    for _ in range(env.scenario.phase_length - 1):
        _, _, _, _, info = env.step(np.array([1, 1]))
    assert info["action_mask"][S:].tolist() == [True, True, True] + [False] * 7  # task 0 now has bank position 0


@pytest.mark.parametrize(
    ("candidates", "action", "message"),
    [
        (8, [2, 0], r"action slot=2 is out of range: there are 2 slots"),
        (8, [0, 10], r"action recall=10 is out of range: 0 = fresh, 1 = keep, 2..9 = candidates"),
        (3, [0, 5], r"action recall=5 is out of range: 0 = fresh, 1 = keep, 2..4 = candidates"),
        (0, [0, 10], r"action recall=10 is out of range: 0 = fresh, 1 = keep, 2..9 = bank positions"),
        (8, [0, 2], r"action recall=2 is masked: candidate 0 is missing; this boundary offers none"),
        (0, [0, 2], r"action recall=2 is masked: bank position 0 is empty"),
        (8, [0.5, 1], r"must be two integers"),
        (8, [0, 1, 2], r"must be two integers"),
    ],
)
def test_invalid_actions_raise_one_error_naming_the_part(candidates, action, message):
    env = gym.make("nsr_env/NSR-Synthetic-v0", strict=True, candidates=candidates, **FAST)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(np.array(action))


def test_inside_a_phase_strict_refuses_anything_but_continue_and_lenient_coerces():
    strict, lenient = (gym.make("nsr_env/NSR-Synthetic-v0", strict=flag, **FAST).unwrapped for flag in (True, False))
    for env in (strict, lenient):
        env.reset(seed=0)
        env.step(np.array([0, 0]))
    with pytest.raises(ValueError, match=r"inside a phase the only valid action is to continue, \[0, 1\]"):
        strict.step(np.array([1, 0]))
    _, _, _, _, info = lenient.step(np.array([1, 0]))
    assert info["action_coerced"] and (info["slot"], info["recall"]) == (0, 1)


def test_recovery_steps_are_zero_when_a_task_recalls_its_own_entry():
    env = gym.make("nsr_env/NSR-Synthetic-v0").unwrapped
    _, info = env.reset(seed=0)
    visits = {}
    for step in range(env.scenario.num_steps):
        task = info["hidden_task_id"]
        if env.at_boundary:
            position = env.learner.entry_of(task)
            code = None if position is None else env.recall_code(position)
            action = [step // env.scenario.phase_length % 2, 0 if code is None else code]
        else:
            action = [env.current_slot, 1]
        _, _, _, _, info = env.step(np.array(action))
        if step % env.scenario.phase_length == env.scenario.phase_length - 1:
            visits.setdefault(task, []).append(info["recovery_steps"])
    assert all(steps[0] != 0 for steps in visits.values())  # a fresh start is not recovered at once
    assert all(later == 0 for steps in visits.values() for later in steps[1:])


def test_ansi_render_shows_slots_bank_and_accuracies():
    env = gym.make("nsr_env/NSR-Synthetic-v0", render_mode="ansi", **FAST)
    rollout(env, seed=0, steps=12)
    frame = env.render()
    assert "slot 0" in frame and "bank 0: task 0" in frame and "accuracy per task" in frame
    image_env = gym.make("nsr_env/NSR-Synthetic-v0", render_mode="rgb_array", **FAST)
    rollout(image_env, seed=0, steps=12)
    image = image_env.render()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.min() < 128 < image.max()
    with pytest.raises(ValueError, match="render_mode='video' is not supported"):
        NSREnv("synthetic", render_mode="video")
