"""Plug-in points: a memory or a protection rule is one class plus one registry line; registries are strict;
the reference-accuracy cache key covers every field that can change a*."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import agents
from agents.base import Agent, register_agent
from nsr_env.config import LEARNER_FIELDS
from nsr_env.lowrank import Factors
from nsr_env.memories import MEMORIES, register_memory
from nsr_env.memories.base import Memory
from nsr_env.prepared import CALIBRATION_EXEMPT, calibration_key
from nsr_env.protection import PROTECTIONS, register_protection
from nsr_env.protection.base import PhaseStart, Protection
from nsr_env.records import Head, Stored
from nsr_env.scenarios import ENV_IDS, FIELDS, SCENARIOS, Scenario, env_id_of, make_scenario, register_scenario


class RawMemory(Memory):
    """A toy memory written for this test: the slot's factors kept as they are (no SVD), oldest evicted first."""

    name = "raw"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.occupied = torch.zeros(capacity, dtype=torch.bool)
        self.items: list[tuple[int, Stored, torch.Tensor] | None] = [None] * capacity
        self.order: list[int] = []

    @classmethod
    def from_config(cls, config, key_dim):
        return cls(config.bank_capacity)

    def write(self, task, adapter, head, key):
        position = self.position_of(task)
        if position is None:
            free = [p for p in range(self.capacity) if not self.occupied[p]]
            position = free[0] if free else self.order.pop(0)
        left, right = (t.detach().clone() for t in adapter)
        stored = Stored(Factors(left, torch.ones(left.shape[1]), right), Head(head.weight.clone(), head.bias.clone()))
        self.items[position] = (task, stored, key.clone())
        self.occupied[position] = True
        self.order = [p for p in self.order if p != position] + [position]
        return position

    def read(self, position):
        return self.items[position][1]

    def peek(self, position):
        return self.items[position][1]

    def similarities(self, query):
        keys = torch.stack([item[2] if item else torch.zeros_like(query) for item in self.items])
        scores = torch.nn.functional.cosine_similarity(keys, query[None, :], dim=1)
        return scores.masked_fill(~self.occupied, float("-inf"))

    def position_of(self, task):
        return next((p for p, item in enumerate(self.items) if item and item[0] == task), None)

    def task_at(self, position):
        return None if self.items[position] is None else self.items[position][0]

    @property
    def nbytes(self):
        return sum(item[1].factors.nbytes for item in self.items if item)

    def save(self, path):
        torch.save(self.items, path)

    @classmethod
    def load(cls, path):
        items = torch.load(path, weights_only=False)
        memory = cls(len(items))
        memory.items = items
        memory.occupied = torch.tensor([item is not None for item in items])
        return memory


class CountingProtection(Protection):
    """A toy protection rule for this test: counts what the learner hands it, changes nothing."""

    name = "counting"
    starts: list[PhaseStart] = []  # noqa: RUF012  (shared on purpose: the learner builds its own instance)
    losses = 0
    steps = 0

    def begin_phase(self, start):
        CountingProtection.starts.append(start)

    def loss(self, loss, features, batch, parameters):
        CountingProtection.losses += 1
        return loss

    def after_step(self, parameters):
        CountingProtection.steps += 1


@pytest.fixture
def raw_memory():
    register_memory("raw", RawMemory)
    yield
    MEMORIES.unregister("raw")


@pytest.fixture
def counting_protection():
    register_protection("counting", CountingProtection)
    CountingProtection.starts, CountingProtection.losses, CountingProtection.steps = [], 0, 0
    yield CountingProtection
    PROTECTIONS.unregister("counting")


def _run(env, agent: str, seed: int = 0) -> list[dict]:
    controller = agents.make(agent, env, seed=seed)
    observation, info = env.reset(seed=seed)
    infos, done = [], False
    while not done:
        observation, _, done, _, info = env.step(controller.act(observation, info))
        infos.append(info)
    return infos


def test_a_memory_registered_in_a_test_runs_an_episode(raw_memory):
    env = gym.make("nsr_env/NSR-Synthetic-v0", memory="raw", cycles=2)
    infos = _run(env, "oracle")
    learner_memory = env.unwrapped.learner.memory
    assert isinstance(learner_memory, RawMemory)
    boundaries = [info for info in infos if info["task_boundary"]]
    returns = boundaries[len(boundaries) // 2 :]
    assert all(info["recalled_task_id"] == info["trained_task_id"] for info in returns)
    assert all(info["recovery_steps"] == 0 for info in returns[1:])
    assert infos[-1]["bank_bytes"] == learner_memory.nbytes > 0
    assert sorted(learner_memory.task_at(p) for p in learner_memory.positions()) == [0, 1, 2, 3]


def test_a_protection_registered_in_a_test_sees_every_phase_and_step(counting_protection):
    env = gym.make("nsr_env/NSR-Synthetic-v0", protect="counting", cycles=1)
    scenario = env.unwrapped.scenario
    CountingProtection.starts, CountingProtection.losses, CountingProtection.steps = [], 0, 0  # not calibration's
    _run(env, "keep")
    starts = counting_protection.starts
    assert [start.task for start in starts] == list(range(scenario.tasks_per_cycle))
    assert [start.others for start in starts] == [(), (0,), (0, 1), (0, 1, 2)]  # keep shares slot 0 with everyone
    assert counting_protection.losses == counting_protection.steps == scenario.num_steps * scenario.optimizer_steps


def test_duplicate_names_raise():
    with pytest.raises(ValueError, match="memory 'svd' is already registered"):
        register_memory("svd", RawMemory)
    with pytest.raises(ValueError, match="protect 'distill' is already registered"):
        register_protection("distill", CountingProtection)
    with pytest.raises(ValueError, match="scenario 'default' is already registered"):
        register_scenario(SCENARIOS["default"])
    with pytest.raises(ValueError, match="agent 'similarity' is already registered"):

        @register_agent
        class Impostor(Agent):
            name = "similarity"

            def place(self, observation, info):
                return np.zeros(2, dtype=int)


@pytest.mark.parametrize(("field", "value"), [("memory", "atoms"), ("protect", "hope"), ("source", "mnist")])
def test_unknown_plugin_names_raise_naming_the_field_and_choices(field, value):
    with pytest.raises(ValueError, match=rf"{field}='{value}' is unknown; choose one of \[") as info:
        make_scenario("synthetic", **{field: value})
    assert "\n" not in str(info.value)


def test_a_scenario_registered_at_run_time_gets_an_environment_id():
    scenario = dataclasses.replace(SCENARIOS["synthetic"], name="tiny_run_time", cycles=1)
    try:
        register_scenario(scenario)
        env_id = env_id_of("tiny_run_time")
        assert env_id == "nsr_env/NSR-TinyRunTime-v0" and ENV_IDS[env_id] == "tiny_run_time"
        env = gym.make(env_id)
        assert env.unwrapped.scenario == scenario
        env.close()
    finally:
        SCENARIOS.pop("tiny_run_time")
        ENV_IDS.pop("nsr_env/NSR-TinyRunTime-v0")
        gym.registry.pop("nsr_env/NSR-TinyRunTime-v0", None)
    with pytest.raises(ValueError, match="scenario name 'tiny_run_time' is unknown"):
        env_id_of("tiny_run_time")


def test_names_written_twice_agree():
    from agents.base import CAPABILITIES
    from analysis.results import CAPABILITY_COLUMNS
    from nsr_env import backbones, scenarios

    assert set(CAPABILITIES) == set(CAPABILITY_COLUMNS)
    assert scenarios.DEFAULT_BACKBONE == backbones.DEFAULT_BACKBONE


def test_every_learner_knob_is_a_scenario_field():
    assert set(LEARNER_FIELDS) <= set(FIELDS)
    scenario = make_scenario("synthetic", svd_energy=None, svd_rank=1, lora_alpha=8.0, eval_size=None)
    config = scenario.learner_config()
    assert (config.svd_rank, config.svd_energy, config.lora_alpha, config.eval_size) == (1, None, 8.0, None)
    with pytest.raises(ValueError, match="give exactly one"):
        make_scenario("synthetic", svd_rank=1)


def _another_value(field: dataclasses.Field, value):
    """A different valid value of a scenario field (for the cache-key test)."""
    alternatives = {
        "source": "split_fashion_mnist", "schedule": "random", "backbone": "tiny_cnn", "retention": "fifo",
        "heads": "slot", "memory": "raw", "protect": "none", "svd_energy": 0.5,
        "lora_alpha": 2.0, "eval_size": 50, "key": "pooled",
    }  # fmt: skip
    if field.name in alternatives:
        return alternatives[field.name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2
    return f"{value}-changed"


def test_the_reference_cache_key_covers_every_field_that_can_change_training(raw_memory):
    base = SCENARIOS["synthetic"]
    key = calibration_key(base)
    for field in dataclasses.fields(Scenario):
        if field.name == "svd_rank":  # a fixed rank replaces the energy threshold
            changed = dataclasses.replace(base, svd_rank=2, svd_energy=None)
        elif field.name == "moram_topk":  # None means the rank
            changed = dataclasses.replace(base, moram_topk=2)
        elif field.name == "probe_labels":  # a labelled probe needs probe images
            changed = dataclasses.replace(base, probe_labels=True, probe_size=4)
        else:
            changed = dataclasses.replace(base, **{field.name: _another_value(field, getattr(base, field.name))})
        if field.name in CALIBRATION_EXEMPT:
            assert calibration_key(changed) == key, field.name
        else:
            assert calibration_key(changed) != key, field.name
    assert "cycles" in CALIBRATION_EXEMPT and "memory" not in CALIBRATION_EXEMPT


def test_memory_save_and_load_round_trip_through_the_interface(tmp_path: Path):
    env = gym.make("nsr_env/NSR-Synthetic-v0", cycles=1)
    _run(env, "fresh")
    memory = env.unwrapped.learner.memory
    memory.save(tmp_path / "memory.bin")
    loaded = type(memory).load(tmp_path / "memory.bin")
    assert loaded.positions() == memory.positions() and loaded.nbytes == memory.nbytes
    for position in memory.positions():
        assert loaded.task_at(position) == memory.task_at(position)
        assert loaded.position_of(memory.task_at(position)) == position
        assert torch.equal(loaded.peek(position).factors.delta(), memory.peek(position).factors.delta())
