"""Every registered memory mechanism, through the same environment: checkers, determinism, save and load,
bytes, and a recall that beats a fresh start on real Fashion-MNIST; then each mechanism's defining property."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import agents
from agents.evaluate import run_episode
from nsr_env import measures
from nsr_env.config import LearnerConfig
from nsr_env.envs import NSREnv
from nsr_env.lowrank import compress
from nsr_env.memories import MEMORIES, make_memory
from nsr_env.memories.moram import RankOneAtomMemory
from nsr_env.memories.share import SharedSubspaceMemory, balanced_factors
from nsr_env.memories.storage import MemoryFileError
from nsr_env.protection import PROTECTIONS
from nsr_env.records import Head

MECHANISMS = sorted(MEMORIES)
SMALL = dict(cycles=2, tasks_per_cycle=3, phase_length=6, bank_capacity=4)


def _rewards(env: gym.Env, agent: str, seed: int) -> list[float]:
    controller = agents.make(agent, env.unwrapped, seed=seed)
    rows, _ = run_episode(controller, env.unwrapped, seed)
    return [row["regret"] for row in rows]


@pytest.mark.parametrize("protect", sorted(PROTECTIONS))
@pytest.mark.parametrize("memory", MECHANISMS)
def test_every_memory_and_protection_pass_the_checkers_without_warnings(memory, protect):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(gym.make("nsr_env/NSR-Synthetic-v0", memory=memory, protect=protect, **SMALL).unwrapped)
        sb3_check_env(gym.make("nsr_env/NSR-Synthetic-v0", memory=memory, protect=protect, **SMALL))


@pytest.mark.parametrize("memory", MECHANISMS)
def test_the_same_seed_gives_the_same_episode(memory):
    first, second = (gym.make("nsr_env/NSR-Synthetic-v0", memory=memory, **SMALL) for _ in range(2))
    assert _rewards(first, "similarity", 3) == _rewards(second, "similarity", 3)
    assert _rewards(first, "similarity", 3) != _rewards(first, "similarity", 4)


def _saved_tensor_bytes(path: Path) -> int:
    """Bytes of every tensor in a memory file's payload (after its two header lines)."""
    payload = path.read_bytes().split(b"\n", 2)[2]

    def count(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(count(item) for item in value.values())
        if isinstance(value, (list, tuple)):
            return sum(count(item) for item in value)
        return 0

    return count(torch.load(io.BytesIO(payload), weights_only=True))


@pytest.mark.parametrize("memory", MECHANISMS)
def test_save_and_load_round_trip_and_bytes_count_what_is_stored(memory, tmp_path):
    env = NSREnv("synthetic", memory=memory, **SMALL)
    run_episode(agents.make("similarity", env, seed=0), env, 0)
    stored = env.learner.memory
    path = tmp_path / "memory.bin"
    stored.save(path)
    loaded = type(stored).load(path)
    assert loaded.positions() == stored.positions() and len(stored) >= 3
    assert loaded.nbytes == stored.nbytes == _saved_tensor_bytes(path)
    query = env.learner.tasks[0].key
    assert torch.equal(loaded.similarities(query), stored.similarities(query))
    for position in stored.positions():
        assert loaded.task_at(position) == stored.task_at(position)
        assert torch.allclose(loaded.peek(position).factors.delta(), stored.peek(position).factors.delta(), atol=1e-6)
        assert torch.equal(loaded.peek(position).head.weight, stored.peek(position).head.weight)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(MemoryFileError, match="truncated or altered"):
        type(stored).load(path)


def _returning_recovery(memory: str, agent: str) -> float:
    env = NSREnv("default", memory=memory, cycles=2)
    rows, _ = run_episode(agents.make(agent, env, seed=0), env, 0)
    frame = pd.DataFrame(rows).groupby("phase").last()
    return float(np.mean(measures.returning_recovery(frame.task, frame.recovery_steps, env.scenario.phase_length)))


@pytest.mark.parametrize("memory", MECHANISMS)
def test_a_return_through_the_memory_recovers_faster_than_a_fresh_start_without_one(memory):
    """Real Fashion-MNIST (``default``, two cycles): the similarity rule through each memory (for one that
    routes per input, the memory itself) against fresh starts on the SVD bank, which never read it."""
    assert _returning_recovery(memory, "similarity") < _returning_recovery("svd", "fresh")


# --- share -------------------------------------------------------------------------------------


def _random_adapter(generator: torch.Generator, out: int = 24, inputs: int = 12, rank: int = 3):
    left = torch.randn(out, rank, generator=generator)
    right = torch.randn(rank, inputs, generator=generator)
    return left, right


def _write(memory: SharedSubspaceMemory, task: int, adapter) -> int:
    head = Head(torch.zeros(2, 8), torch.zeros(2))
    return memory.write(task, adapter, head, torch.ones(5) + task)


def test_share_reconstructs_exactly_while_the_basis_holds_every_direction():
    memory = SharedSubspaceMemory(capacity=8, key_dim=5, basis_size=9)
    generator = torch.Generator().manual_seed(0)
    adapters = [_random_adapter(generator) for _ in range(3)]  # 3 tasks x rank 3 = 9 directions per side
    for task, adapter in enumerate(adapters):
        _write(memory, task, adapter)
    for task, (left, right) in enumerate(adapters):
        delta = memory.peek(memory.position_of(task)).factors.delta()
        assert torch.allclose(delta, left @ right, atol=1e-4)
    assert memory.basis_in.shape == (12, 9) and memory.basis_out.shape == (24, 9)


def test_share_loses_exactly_the_energy_outside_its_basis():
    """At a write, the stacked factors' squared residual off the new bases is the tail of their singular values
    (Eckart-Young): what the shared subspace drops, and nothing more."""
    memory = SharedSubspaceMemory(capacity=8, key_dim=5, basis_size=4)
    generator = torch.Generator().manual_seed(1)
    for task in range(3):
        _write(memory, task, _random_adapter(generator))
    incoming = _random_adapter(generator)
    stored = [memory.peek(p).factors for p in memory.positions()] + [compress(incoming, energy=1.0)]
    before = [balanced_factors(factors) for factors in stored]
    _write(memory, 3, incoming)
    for side, basis in ((0, memory.basis_out), (1, memory.basis_in)):
        stacked = torch.cat([pair[side] for pair in before], dim=1)
        residual = (stacked - basis @ (basis.T @ stacked)).square().sum()
        tail = torch.linalg.svdvals(stacked)[4:].square().sum()
        assert torch.allclose(residual, tail, rtol=1e-3)
        assert residual > 0  # 12 directions into 4: something is lost
    after = torch.cat([memory.factors_of(p)[0] for p in memory.positions()], dim=1)
    projected = torch.cat([memory.basis_out @ (memory.basis_out.T @ pair[0]) for pair in before], dim=1)
    assert torch.allclose(after, projected, atol=1e-5)


def test_share_counts_its_basis_once_and_a_task_adds_only_coefficients_head_and_key():
    memory = SharedSubspaceMemory(capacity=8, key_dim=5, basis_size=32)
    generator = torch.Generator().manual_seed(2)
    for task in range(4):
        _write(memory, task, _random_adapter(generator))
    basis = (memory.basis_out.numel() + memory.basis_in.numel()) * 4
    entry = memory.entries[memory.position_of(0)]
    coefficients = (entry.out_coefficients.numel() + entry.in_coefficients.numel()) * 4
    assert entry.nbytes == coefficients + (2 * 8 + 2 + 5) * 4
    assert memory.nbytes == basis + sum(memory.entries[p].nbytes for p in memory.positions())


def test_a_fresh_slot_starts_inside_the_shared_input_basis():
    memory = SharedSubspaceMemory(capacity=8, key_dim=5, basis_size=32)
    generator = torch.Generator().manual_seed(3)
    assert memory.fresh_start(4, generator) is None  # nothing stored yet: LoRA's own start
    _write(memory, 0, _random_adapter(generator))
    start = memory.fresh_start(4, generator)
    assert start.shape == (4, 12)
    assert torch.allclose(start @ memory.basis_in @ memory.basis_in.T, start, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [(dict(memory="share", bank_float16=True), "bank_float16"), (dict(memory="share", share_basis=0), "share_basis")],
)
def test_share_refuses_a_meaningless_setting_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        make_memory(LearnerConfig(**overrides), key_dim=5)


# --- moram -------------------------------------------------------------------------------------


def _block_adapter(block: slice, generator: torch.Generator, rank: int = 2, inputs: int = 12, out: int = 24):
    """An adapter whose atoms' keys read only the input coordinates in ``block`` (as atoms trained on a task
    whose inputs live there would)."""
    keys = torch.zeros(rank, inputs)
    keys[:, block] = torch.rand(rank, block.stop - block.start, generator=generator) + 0.5
    return torch.randn(out, rank, generator=generator), keys


def test_moram_atoms_activate_themselves_for_their_own_tasks_inputs():
    """A separable toy: two tasks' inputs in disjoint coordinate blocks. Top-k self-activation picks only the
    atoms of the input's own task, so the routed output is exactly what those atoms give."""
    memory = RankOneAtomMemory(capacity=4, topk=2, threshold=0.2)
    generator = torch.Generator().manual_seed(0)
    blocks = (slice(0, 6), slice(6, 12))
    adapters = [_block_adapter(block, generator) for block in blocks]
    for task, adapter in enumerate(adapters):
        memory.write(task, adapter, Head(torch.zeros(2, 24), torch.zeros(2)), torch.zeros(5))
    empty_A, empty_B = torch.zeros(0, 12), torch.zeros(24, 0)
    for task, block in enumerate(blocks):
        inputs = torch.zeros(50, 12)
        inputs[:, block] = torch.rand(50, 6, generator=generator)
        scores = torch.nn.functional.normalize(inputs @ memory.pool_keys.T, dim=1)
        owners = torch.tensor([0, 0, 1, 1])
        assert (owners[scores.topk(2, dim=1).indices] == task).all()
        values, keys = adapters[task]
        with torch.no_grad():
            routed = memory.adapted(inputs, empty_A, empty_B, 1.0)
            projections = inputs @ keys.T
            gates = torch.softmax(torch.nn.functional.normalize(projections, dim=1) / memory.temperature, dim=1)
        assert torch.allclose(routed, (gates * projections) @ values.T, atol=1e-5)


def test_moram_offers_nothing_to_recall_and_masks_it():
    env = NSREnv("synthetic", memory="moram", **SMALL)
    run_episode(agents.make("fresh", env, seed=0), env, 0)
    env.reset(seed=1)
    for _ in range(SMALL["phase_length"]):
        env.step(np.array([0, 0]) if env.at_boundary else np.array([env.current_slot, 1]))
    mask = env.action_masks()
    assert len(env.learner.memory) > 0 and env.candidate_positions == []
    assert mask[env.scenario.slots :].tolist()[:2] == [True, True] and not mask[env.scenario.slots + 2 :].any()
    with pytest.raises(ValueError, match="recall"):
        env.learner.memory.read(env.learner.memory.positions()[0])


@pytest.mark.parametrize(("field", "value"), [("probe_labels", True), ("key", "arrow")])
def test_moram_refuses_options_that_need_recall_naming_them(field, value):
    with pytest.raises(ValueError, match=f"{field}=.*memory='moram'"):
        NSREnv("synthetic", memory="moram", probe_size=4, **{field: value})
