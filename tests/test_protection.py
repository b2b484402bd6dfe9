"""Every registered protection rule, seeded; then EBLoRA's defining property: a shared slot's
new task changes nothing its earlier users' protected inputs see, in balanced directions."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import pytest
import torch

import agents
from agents.evaluate import run_episode
from nsr_env.learner import FRESH, KEEP, ContinualLearner
from nsr_env.protection import PROTECTIONS
from nsr_env.protection.eblora import energy_basis
from nsr_env.scenarios import prepare

RULES = sorted(PROTECTIONS)
SMALL = dict(cycles=2, tasks_per_cycle=3, phase_length=6, bank_capacity=4, slots=1)


@pytest.mark.parametrize("protect", RULES)
def test_the_same_seed_gives_the_same_episode(protect):
    """(The checkers run over every memory and protection in tests/test_memories.py.)"""
    regrets = []
    for _ in range(2):
        env = gym.make("nsr_env/NSR-Synthetic-v0", protect=protect, **SMALL).unwrapped
        rows, _ = run_episode(agents.make("keep", env, seed=0), env, 0)
        regrets.append([row["regret"] for row in rows])
    assert regrets[0] == regrets[1]


@pytest.fixture(scope="module")
def default_data():
    return prepare("default", progress=False)


def test_eblora_leaves_the_earlier_users_protected_inputs_unchanged_in_balanced_directions(default_data):
    config = dataclasses.replace(default_data.scenario.learner_config(), protect="eblora", heads="slot")
    learner = ContinualLearner(default_data.tasks, default_data.pool_kind, config, seed=0)
    learner.begin_phase(0, 0, FRESH)
    for _ in range(20):
        learner.decision_step()
    learner.end_phase()
    protection = learner.protection
    layer, head = learner._gradients(0, 0)
    assert torch.equal(protection.inputs[0], energy_basis(layer, config.eblora_energy))
    assert torch.equal(protection.features[0], energy_basis(head.T, config.eblora_energy))
    A0, B0, W0 = learner.slots.A[0].clone(), learner.slots.B[0].clone(), learner.heads[0].weight.clone()
    learner.begin_phase(1, 0, KEEP)
    for _ in range(20):
        learner.decision_step()
    F_in, F_head = protection.input_basis, protection.head_basis
    assert F_in.shape[1] >= 1 and F_head.shape[1] >= 1
    scale = learner.slots.scale
    change = scale * (learner.slots.B[0] @ learner.slots.A[0] - B0 @ A0)  # (out, in)
    assert change.norm() > 1e-3  # the new task did learn
    assert (change @ F_in).norm() < 1e-4 * change.norm()  # ... nothing its predecessor's inputs can see
    head_change = learner.heads[1].weight - W0
    assert head_change.norm() > 1e-3 and (head_change @ F_head).norm() < 1e-4 * head_change.norm()
    values = torch.linalg.svdvals(B0 @ (learner.slots.A[0] - A0))
    values = values[values > 1e-6 * values[0]]
    assert len(values) >= 2 and torch.allclose(values, values[0].expand_as(values), rtol=1e-3)  # balanced


def test_a_keep_without_earlier_users_is_not_constrained(default_data):
    config = dataclasses.replace(default_data.scenario.learner_config(), protect="eblora")
    learner = ContinualLearner(default_data.tasks, default_data.pool_kind, config, seed=0)
    learner.begin_phase(0, 0, FRESH)
    assert learner.protection.start is None
