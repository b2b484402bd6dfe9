"""The candidate interface, the labelled probe and the probe rule (SYNTHETIC features, and real trap twins)."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import agents
from nsr_env.envs import NSREnv
from nsr_env.recall import Recall
from nsr_env.scenarios import make_scenario

INTERFACES = {
    "positions": {"candidates": 0},
    "candidates": {"candidates": 3},
    "labelled probe": {"candidates": 3, "probe_size": 8, "probe_labels": True},
}
SYNTHETIC = {"bank_capacity": 3, "cycles": 2}  # 4 tasks, 3 entries: evictions happen


@pytest.mark.parametrize("env_id", ["nsr_env/NSR-Synthetic-v0", "nsr_env/NSR-v0"])
@pytest.mark.parametrize("interface", INTERFACES)
def test_both_checkers_pass_without_warnings_in_every_interface(env_id, interface):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(gym.make(env_id, **INTERFACES[interface]).unwrapped)
        sb3_check_env(gym.make(env_id, **INTERFACES[interface]))


def boundaries(env: NSREnv, controller, seed: int):
    """(observation, info, entries in memory, best similarity to an entry) at every task boundary of one episode."""
    observation, info = env.reset(seed=seed)
    seen, done = [], False
    while not done:
        if env.at_boundary:
            seen.append((observation, info, len(env.learner.memory), float(env.visit_similarity.max())))
        observation, _, done, _, info = env.step(controller.act(observation, info))
    return seen


def test_candidates_are_the_most_similar_entries_best_first_and_the_mask_covers_them():
    env = NSREnv("synthetic", probe_size=8, probe_labels=True, **SYNTHETIC)
    layout, occupied_counts = env.observation_layout, []
    for observation, info, count, best in boundaries(env, agents.make("random", env, seed=0), seed=0):
        present = observation[layout["candidate_present"]] > 0.5
        similarity = observation[layout["candidate_similarity"]]
        occupied_counts.append(count)
        assert present.sum() == min(count, 3) and (present[: present.sum()]).all()
        assert (np.diff(similarity[present]) <= 0).all()  # best first
        if count:  # candidate 0 is the most similar occupied entry
            assert similarity[0] == pytest.approx(best, abs=1e-6)
        np.testing.assert_array_equal(info["action_mask"][env.scenario.slots + Recall.BANK :], present)
        probe = observation[layout["candidate_probe_accuracy"]]
        assert ((probe[present] >= 0) & (probe[present] <= 1)).all() and (probe[~present] == -1).all()
    assert max(occupied_counts) == 3 and min(occupied_counts) == 0


def test_a_recalled_candidate_counts_its_recall_and_the_oracle_recalls_through_candidates():
    env = NSREnv("synthetic", candidates=2, cycles=2)  # 4 tasks, 8 positions, 2 candidates
    layout = env.observation_layout
    seen = boundaries(env, agents.make("oracle", env), seed=1)
    recalled = [observation[layout["candidate_recalls"]].max() for observation, *_ in seen]
    assert recalled[0] == 0 and max(recalled) > 0
    steps = agents.evaluate("oracle", "nsr_env/NSR-Synthetic-v0", seeds=[1], candidates=2, cycles=2)
    recalls = steps[steps.task_boundary & (steps.recall >= Recall.BANK)]
    assert len(recalls) and (recalls.recalled_task == recalls.task).all()


def shuffle_memory(env: NSREnv, order: list[int]) -> None:
    """Move the entry at position ``order[i]`` to position i: in the SVD bank and in the env's ledger."""
    bank = env.learner.memory
    bank.entries = [bank.entries[old] for old in order]
    bank.keys, bank.occupied = bank.keys[order].clone(), bank.occupied[order].clone()
    new = {old: position for position, old in enumerate(order)}
    bank._task_positions = {task: new[old] for task, old in bank._task_positions.items()}
    for name in ("written", "recalls", "accuracy"):
        setattr(env.ledger, name, getattr(env.ledger, name)[order].copy())


@pytest.mark.parametrize("rule", ["similarity", "probe"])
def test_the_same_memory_shuffled_gives_the_same_observations_and_decisions(rule):
    env = NSREnv("synthetic", probe_size=8, probe_labels=True, bank_capacity=3, cycles=3)
    shuffled = copy.deepcopy(env)
    first, second = agents.make(rule, env), agents.make(rule, shuffled)
    observations = [env.reset(seed=3), shuffled.reset(seed=3)]
    rng, moved, L = np.random.default_rng(0), 0, env.scenario.phase_length
    for step in range(env.scenario.num_steps):
        if step % L == L - 1 and len(shuffled.learner.memory) > 1:  # before the phase end writes and the next visit
            order = rng.permutation(env.scenario.bank_capacity).tolist()
            shuffle_memory(shuffled, order)
            moved += order != sorted(order)
        actions = [first.act(*observations[0]), second.act(*observations[1])]
        np.testing.assert_array_equal(*actions)
        results = [env.step(actions[0]), shuffled.step(actions[1])]
        np.testing.assert_array_equal(results[0][0], results[1][0])
        assert results[0][1] == results[1][1] and results[0][4]["recalled_task_id"] == results[1][4]["recalled_task_id"]
        observations = [(result[0], result[4]) for result in results]
    assert moved > 5


def test_the_probe_rule_tells_trap_twins_apart_where_similarity_cannot():
    """Real trap twins (the same images, labels swapped) on small subsets: input similarity recalls the twin,
    the labelled probe the task's own entry."""
    options = dict(train_per_class=40, eval_per_class=20, probe_per_class=16, probe_size=16, probe_labels=True)
    options |= dict(phase_length=15, cycles=2)
    precision = {}
    for rule in ("similarity", "probe"):
        steps = agents.evaluate(rule, "nsr_env/NSR-Traps-v0", seeds=[0, 1], **options)
        recalls = steps[steps.task_boundary & (steps.recall >= Recall.BANK)]
        precision[rule] = float((recalls.recalled_task == recalls.task).mean()) if len(recalls) else 0.0
    assert precision["probe"] > precision["similarity"] + 0.3, precision


@pytest.mark.parametrize("rule", ["similarity", "oracle", "fresh"])
def test_the_labelled_probe_only_adds_to_the_observation(rule):
    """The ablation shows every controller of a stream the labelled probe, so probe pairs with similarity by
    seed; that is fair only if a rule that ignores it runs the same episode with it on."""
    options = {"candidates": 3, "probe_size": 8, "slots": 1, "cycles": 2}
    without = agents.evaluate(rule, "nsr_env/NSR-Synthetic-v0", seeds=[0, 1], **options)
    with_labels = agents.evaluate(rule, "nsr_env/NSR-Synthetic-v0", seeds=[0, 1], probe_labels=True, **options)
    columns = ["task", "slot", "recall", "recalled_task", "accuracy", "regret"]
    assert without["recall"].ge(Recall.BANK).any() or rule == "fresh"
    pd.testing.assert_frame_equal(without[columns], with_labels[columns])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"candidates": -1}, r"candidates=-1 must be an integer >= 0 \(0: recall by memory position\)"),
        ({"candidates": True}, r"candidates=True must be an integer >= 0"),
        ({"probe_labels": "yes"}, r"probe_labels='yes' must be True or False"),
        ({"probe_labels": True, "probe_size": 0}, r"probe_labels=True .* needs candidates >= 1 and probe_size >= 1"),
        ({"probe_labels": True, "candidates": 0}, r"probe_labels=True .* \(got candidates=0, probe_size=32\)"),
    ],
)
def test_bad_interface_options_raise_one_error_naming_them(overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        make_scenario("default", **overrides)
    assert "\n" not in str(info.value)


def test_the_probe_rule_needs_a_labelled_probe_and_a_margin_in_range():
    with pytest.raises(ValueError, match=r"agent 'probe' .* make the env with probe_labels=True"):
        agents.make("probe", NSREnv("synthetic"))
    with pytest.raises(ValueError, match=r"margin=1.5 must be in \[0, 1\]"):
        agents.make("probe", NSREnv("synthetic", probe_size=4, probe_labels=True), margin=1.5)


def test_the_hidden_retrieval_rank_breaks_ties_as_the_interface_orders_candidates():
    """Trap twins share their images, so their entries tie exactly; the rank of the task's own entry is its
    place in the candidate order (ties: the most recently written first), so a tie can rank it second."""
    env = NSREnv("traps", backbone="tiny_cnn", train_per_class=10, eval_per_class=5, probe_per_class=8, probe_size=4)
    controller = agents.make("oracle", env)
    observation, info = env.reset(seed=0)
    tied, done = 0, False
    while not done:
        own = env.learner.entry_of(env.current_task) if env.at_boundary else None
        if own is not None:
            order = env.candidate_positions
            assert env.visit_rank == order.index(own)
            scores = env.visit_similarity.numpy()
            for twin in np.flatnonzero(scores == scores[own]):
                if twin != own:  # the same score: the more recently written entry comes first
                    tied += 1
                    newer = env.ledger.written[twin] > env.ledger.written[own]
                    assert (order.index(twin) < order.index(own)) == newer
        observation, _, done, _, info = env.step(controller.act(observation, info))
    assert tied >= 5
