"""Observed keys: probe draws per visit, the key kinds, the idealised setting kept as it was, bad values,
the Zipf schedule and the hidden retrieval measures. Real Fashion-MNIST features (the default scenario)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import agents
from agents.similarity import best_threshold
from nsr_env.data.tasks import class_split
from nsr_env.scenarios import make_scenario, prepare

SHORT = {"cycles": 2, "phase_length": 5}


def boundary_keys(env_id: str, seed: int, **overrides) -> list[tuple[int, torch.Tensor]]:
    """(task, observed key) at every task boundary of one oracle episode."""
    env = gym.make(env_id, **SHORT, **overrides)
    inner = env.unwrapped
    controller = agents.make("oracle", env)
    observation, info = env.reset(seed=seed)
    keys, done = [], False
    while not done:
        if inner.at_boundary:
            keys.append((inner.current_task, inner.visit_key.clone()))
        observation, _, done, _, info = env.step(controller.act(observation, info))
    return keys


def test_probe_keys_are_fresh_per_visit_and_seed_and_repeat_with_the_seed():
    first = boundary_keys("nsr_env/NSR-v0", seed=0)
    again = boundary_keys("nsr_env/NSR-v0", seed=0)
    other = boundary_keys("nsr_env/NSR-v0", seed=1)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for (_, a), (_, b) in zip(first, other, strict=True))
    by_task: dict[int, list[torch.Tensor]] = {}
    for task, key in first:
        by_task.setdefault(task, []).append(key)
    assert all(len(keys) == 2 and not torch.equal(*keys) for keys in by_task.values())
    exact = boundary_keys("nsr_env/NSR-Idealised-v0", seed=0)
    assert all(torch.equal(key, exact[task][1]) for task, key in exact)  # the exact key never changes


def test_probe_training_and_held_out_subsets_are_disjoint():
    tasks = class_split("fashion_mnist", [[0, 1], [2, 3]], train_per_class=100, eval_per_class=20, probe_per_class=30)
    for task in tasks:
        assert len(task.probe_indices) == 60 and not set(task.probe_indices) & set(task.train_indices)
        assert len(np.unique(task.probe_indices)) == 60  # eval indices are in the test split, probes in train


def test_observed_similarity_to_the_own_entry_is_below_one_but_ranks_it_first():
    steps = agents.evaluate("oracle", "nsr_env/NSR-v0", seeds=[0], **SHORT)
    returns = steps[steps.task_boundary & (steps.phase >= 5)]
    assert (returns.retrieval_rank == 0).all() and (returns.relevant_recall == 1).all()
    env = gym.make("nsr_env/NSR-v0", **SHORT)
    inner = env.unwrapped
    controller = agents.make("oracle", env)
    observation, info = env.reset(seed=0)
    own = []
    for _ in range(inner.scenario.num_steps):
        if inner.at_boundary and inner.learner.entry_of(inner.current_task) is not None:
            own.append(float(inner.visit_similarity[inner.learner.entry_of(inner.current_task)]))
        observation, _, _, _, info = env.step(controller.act(observation, info))
    assert len(own) == 5 and all(0.9 < value < 1.0 for value in own)


def test_idealised_reproduces_the_first_stage_numbers():
    """Cumulative regret of the similarity rule and fresh on the first stage's `default` (5 tasks x 2 cycles,
    seeds 0 and 1), as `make demo` measured them before observed keys existed (commit 81d4b11)."""
    for agent, expected in (("similarity", [10.161998, 13.151499]), ("fresh", [17.991998, 21.024999])):
        steps = agents.evaluate(agent, "nsr_env/NSR-Idealised-v0", seeds=[0, 1], cycles=2)
        assert steps.groupby("seed").regret.sum().tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"probe_size": -1}, r"probe_size=-1 must be an integer >= 0"),
        ({"key": "mean"}, r"key='mean' is unknown; choose one of \['input', 'pooled', 'arrow'\]"),
        ({"key": "arrow", "probe_size": 0}, r"key='arrow' scores memory entries by the probe's inputs"),
        ({"probe_size": 4, "probe_per_class": 0}, r"probe_size=4 needs probe_per_class >= 1"),
        ({"schedule": "zipf", "zipf_exponent": 0}, r"zipf_exponent=0 must be a number in \(0, 10\)"),
        ({"zipf_exponent": "1"}, r"zipf_exponent=.1. must be a number in \(0, 10\)"),
    ],
)
def test_bad_observed_key_values_raise_one_error_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        make_scenario("default", **overrides)
    assert "\n" not in str(info.value)


def test_a_probe_larger_than_the_split_is_refused_before_any_extraction(tmp_path, monkeypatch):
    import nsr_env.features as features

    def no_extraction(*args, **kwargs):
        raise AssertionError("a probe_size the probe split cannot hold must be refused before extraction")

    monkeypatch.setattr(features, "extract", no_extraction)
    cases = [
        (make_scenario("synthetic", probe_per_class=3, probe_size=7), 6),
        (make_scenario("default", probe_per_class=2, probe_size=5, backbone="tiny_cnn"), 4),
        (make_scenario("traps", probe_per_class=3, probe_size=7, backbone="tiny_cnn"), 6),
    ]
    for scenario, smallest in cases:
        message = rf"probe_size={scenario.probe_size} is larger than the smallest probe split \({smallest} images\)"
        with pytest.raises(ValueError, match=message):
            prepare(scenario, cache=tmp_path, progress=False)


def test_zipf_schedule_visits_every_task_once_then_recurs_by_popularity():
    scenario = make_scenario("synthetic", schedule="zipf", tasks_per_cycle=50, cycles=20, zipf_exponent=1.2)
    tasks = scenario.phase_tasks(np.random.default_rng(0))
    assert tasks[:50].tolist() == list(range(50)) and len(tasks) == 1000
    assert (tasks[1:] != tasks[:-1]).all()
    counts = np.sort(np.bincount(tasks[50:], minlength=50))[::-1]
    assert counts[0] > 10 * max(counts[25], 1)  # a few tasks recur often, most seldom
    assert np.array_equal(tasks, scenario.phase_tasks(np.random.default_rng(0)))
    assert not np.array_equal(tasks, scenario.phase_tasks(np.random.default_rng(1)))


def test_best_threshold_maximises_correct_minus_wrong_recalls():
    top = np.array([0.99, 0.97, 0.96, 0.95, 0.94, 0.90])
    correct = np.array([True, True, False, True, True, False])
    # recalling down to 0.94 gains 4 right - 1 wrong = 3; stopping above 0.94 gains 2, going below 0.90 gains 2
    assert best_threshold(top, correct) == pytest.approx(0.92)
    assert best_threshold(top[:3], correct[:3]) == pytest.approx(0.965)  # 2 right beat 2 right and 1 wrong
    assert best_threshold(np.array([0.9]), np.array([False])) > 0.9  # never recall when recalling is wrong


def test_pooled_and_arrow_keys_have_their_sizes_and_ranges():
    scores = {}
    for key in ("input", "pooled", "arrow"):
        env = gym.make("nsr_env/NSR-v0", key=key, **SHORT).unwrapped
        controller = agents.make("oracle", env)
        observation, info = env.reset(seed=0)
        scores[key], done = [], False
        while not done:
            if env.at_boundary and len(env.learner.memory):
                occupied = env.learner.memory.occupied
                scores[key].append(env.visit_similarity[occupied])
                own = env.learner.entry_of(env.current_task)
                if own is not None and key != "arrow":  # data keys rank a returning task's own entry first
                    assert env.visit_rank == 0, key
            observation, _, done, _, info = env.step(controller.act(observation, info))
        if key != "arrow":  # a data key: (320,) mean adapted-layer input, (1280,) mean pooled feature
            assert env.visit_key.shape == ({"input": 320, "pooled": 1280}[key],)
    arrow = torch.cat(scores["arrow"])
    assert ((arrow >= 0) & (arrow <= 1)).all() and arrow.std() > 0  # a share of the probe's energy
    assert env.visit_inputs.shape == (env.scenario.probe_size * 4, 320)  # 32 images x 4 positions
    for key in ("input", "pooled"):
        values = torch.cat(scores[key])
        assert ((values > 0.5) & (values <= 1)).all(), key  # cosines of non-negative means: all alike, below 1


def test_the_threshold_is_chosen_on_another_data_seed_with_returns():
    from agents.similarity import CALIBRATION_CYCLES, calibration_scenario

    one_pass = calibration_scenario(make_scenario("default", cycles=1))
    assert (one_pass.data_seed, one_pass.schedule, one_pass.cycles) == (1, "cyclic", CALIBRATION_CYCLES)
    assert calibration_scenario(make_scenario("default", cycles=5)) == one_pass  # one threshold for every T
    sequential = calibration_scenario(make_scenario("default", schedule="sequential", cycles=1, data_seed=3))
    assert (sequential.data_seed, sequential.schedule, sequential.cycles) == (4, "cyclic", CALIBRATION_CYCLES)
    zipf = calibration_scenario(make_scenario("long"))
    assert (zipf.schedule, zipf.cycles, zipf.data_seed) == ("zipf", 5, 1)


def test_the_calibrated_threshold_is_cached_on_disk_and_shared_across_cycles(tmp_path, monkeypatch):
    import agents.similarity as similarity
    import nsr_env.envs.nsr as nsr

    scenario = make_scenario("synthetic", probe_size=8, cycles=1)
    threshold = similarity.calibrated_threshold(scenario, str(tmp_path))
    (record,) = (tmp_path / "calibration").glob("threshold-*.json")
    stored = json.loads(record.read_text())
    assert stored["threshold"] == threshold and stored["recalls"] > stored["correct"] > 0
    similarity.calibrated_threshold.cache_clear()

    def no_episode(*args, **kwargs):
        raise AssertionError("a cached threshold must not run the calibration episodes")

    monkeypatch.setattr(nsr, "NSREnv", no_episode)
    assert similarity.calibrated_threshold(make_scenario("synthetic", probe_size=8, cycles=3), str(tmp_path)) == (
        threshold
    )
