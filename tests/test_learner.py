"""The continual learner on SYNTHETIC features: phases, recall, distillation, divergence, determinism."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from nsr_env.adapters import LoRASlots
from nsr_env.learner import FRESH, KEEP, ContinualLearner, LearnerConfig, TrainingDivergedError
from nsr_env.lowrank import compress
from nsr_env.scenarios import make_scenario, prepare


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return prepare(make_scenario("synthetic"), cache=tmp_path_factory.mktemp("cache"), progress=False)


def learner_for(synthetic, seed=0, **config) -> ContinualLearner:
    config = dataclasses.replace(synthetic.scenario.learner_config(), **config)
    return ContinualLearner(synthetic.tasks, synthetic.pool_kind, config, seed=seed)


def run_stream(learner: ContinualLearner, plan, steps=5) -> list[float]:
    """plan: (task, slot, recall) per phase; returns every decision step's accuracy."""
    accuracies = []
    for task, slot, recall in plan:
        learner.begin_phase(task, slot, recall)
        accuracies += [learner.decision_step()[0] for _ in range(steps)]
        learner.end_phase()
    return accuracies


PLAN = [(0, 0, FRESH), (1, 1, FRESH), (2, 0, FRESH), (0, 1, 0), (1, 1, KEEP)]


def test_same_seed_same_numbers_and_another_seed_differs(synthetic):
    first, second, other = (learner_for(synthetic, seed) for seed in (3, 3, 4))
    a, b, c = (run_stream(learner, PLAN) for learner in (first, second, other))
    assert a == b
    assert a != c
    for position in first.memory.positions():
        assert torch.equal(first.memory.entries[position].factors.U, second.memory.entries[position].factors.U)


def test_fresh_slot_adds_nothing_and_only_the_low_rank_path_and_head_train(synthetic):
    learner = learner_for(synthetic)
    frozen = [t.clone() for t in (synthetic.tasks[0].train_inputs, synthetic.tasks[0].train_base)]
    learner.begin_phase(0, 0, FRESH)
    assert torch.count_nonzero(learner.slots.delta(0)) == 0  # B = 0: standard LoRA init
    head_before = [t.clone() for t in learner.heads[0]]
    for _ in range(3):
        learner.decision_step()
    assert torch.count_nonzero(learner.slots.delta(0)) > 0
    assert not torch.equal(learner.heads[0][0], head_before[0])
    assert torch.equal(frozen[0], synthetic.tasks[0].train_inputs)
    assert torch.equal(frozen[1], synthetic.tasks[0].train_base)
    assert torch.count_nonzero(learner.slots.delta(1)) == 0  # the other slot was not touched


def test_training_improves_held_out_accuracy(synthetic):
    learner = learner_for(synthetic)
    learner.begin_phase(1, 0, FRESH)
    start, _ = learner.evaluate(1)
    accuracies = [learner.decision_step()[0] for _ in range(20)]
    assert max(accuracies[-5:]) > start + 0.2


def test_recalling_its_own_entry_restores_a_task_exactly_with_lossless_compression(synthetic):
    learner = learner_for(synthetic, svd_energy=1.0)
    learner.begin_phase(0, 0, FRESH)
    for _ in range(8):
        learner.decision_step()
    trained, _ = learner.evaluate(0)
    position = learner.end_phase()
    learner.begin_phase(1, 0, FRESH)  # overwrite the slot with another task
    learner.decision_step()
    source = learner.evaluate(0)[1]
    assert source == "bank"  # task 0 holds no slot now: its bank entry answers for it
    learner.end_phase()
    learner.begin_phase(0, 1, position)
    assert learner.evaluate(0) == (trained, "slot")
    assert torch.allclose(learner.slots.delta(1), learner.memory.entries[position].factors.delta(), atol=1e-5)


def test_phase_end_refreshes_the_own_entry_and_copies_another_tasks(synthetic):
    learner = learner_for(synthetic)
    run_stream(learner, [(0, 0, FRESH)], steps=2)
    (position,) = learner.memory.positions()
    created = learner.memory.entries[position].created
    run_stream(learner, [(0, 0, position)], steps=2)
    entry = learner.memory.entries[position]
    assert learner.memory.positions() == [position] and entry.created == created
    assert entry.visits == 3  # reserved, recalled, refreshed
    run_stream(learner, [(1, 1, position)], steps=2)  # task 1 warm-started from task 0's entry
    assert len(learner.memory) == 2
    assert learner.memory.entries[position].task_label == 0 and learner.memory.entries[position].visits == 4
    assert learner.entry_of(1) != position


def test_evaluation_sources_and_an_untrained_task_at_chance(synthetic):
    learner = learner_for(synthetic)
    accuracy, source = learner.evaluate(3)
    assert source == "base" and accuracy == pytest.approx(0.5)  # all-zero logits: class 0 for all, balanced
    learner.begin_phase(3, 0, FRESH)
    assert learner.evaluate(3)[1] == "slot"
    row = learner.evaluate_all()
    assert row.shape == (len(synthetic.tasks),) and np.all((row >= 0) & (row <= 1))


def logits_of(learner: ContinualLearner, task: int, inputs_of: int) -> torch.Tensor:
    data = learner.tasks[inputs_of]
    _, A, B, weight, bias = learner.predictor(task)
    with torch.no_grad():
        return learner._features(data.train_inputs, data.train_base, A, B) @ weight.T + bias


@pytest.mark.parametrize("steps", [15])
def test_distillation_keeps_the_other_users_outputs_close_to_their_snapshot(synthetic, steps):
    drift = {}
    for weight in (0.0, 5.0):
        learner = learner_for(synthetic, distill_weight=weight)
        learner.begin_phase(0, 0, FRESH)
        for _ in range(steps):
            learner.decision_step()
        learner.end_phase()
        learner.begin_phase(1, 0, KEEP)  # task 1 shares task 0's slot
        snapshot = logits_of(learner, 0, inputs_of=1)
        for _ in range(steps):
            learner.decision_step()
        assert learner.slot_of(0) == 0 and learner.slot_of(1) == 0
        drift[weight] = (logits_of(learner, 0, inputs_of=1) - snapshot).pow(2).mean().item()
    assert drift[5.0] < 0.5 * drift[0.0]


@pytest.fixture(scope="module")
def default_data():
    """The real default scenario: SYNTHETIC tasks are separable by one head, so nothing would be forgotten."""
    return prepare("default", progress=False)


def test_shared_heads_make_keep_forget_and_distillation_hold_it(default_data):
    """heads="slot": after keep, both tasks predict through one head, so training task 1 costs task 0."""
    held = {}
    for weight in (0.0, 1.0):
        config = dataclasses.replace(default_data.scenario.learner_config(), heads="slot", distill_weight=weight)
        learner = ContinualLearner(default_data.tasks, default_data.pool_kind, config, seed=0)
        run_stream(learner, [(0, 0, FRESH)], steps=40)
        before = learner.evaluate(0)[0]
        learner.begin_phase(1, 0, KEEP)
        for _ in range(40):
            learner.decision_step()
        for tensor_of_0, tensor_of_1 in zip(learner.heads[0], learner.heads[1], strict=True):
            assert tensor_of_0 is tensor_of_1  # one head, not two copies that happen to agree
        held[weight] = learner.evaluate(0)[0] - before
        learner.end_phase()
        assert learner.predictor(0)[0] == "slot"
    assert held[0.0] < -0.1  # naive fine-tuning of the shared head forgets
    assert held[1.0] > held[0.0] + 0.05


@pytest.mark.parametrize("heads", ["task", "slot"])
def test_kept_accuracies_of_slotless_tasks_equal_fresh_evaluations(default_data, heads):
    """evaluate() keeps a slotless task's accuracy until its entry or head is replaced: through refreshes,
    keeps and evictions (K = 3 < 4 tasks), every row equals one computed with nothing kept. Real tasks, whose
    accuracies still move after a few steps (SYNTHETIC ones saturate and would hide a stale value)."""
    config = dataclasses.replace(default_data.scenario.learner_config(), heads=heads, bank_capacity=3)
    learner = ContinualLearner(default_data.tasks, default_data.pool_kind, config, seed=0)
    plan = [(0, 0, FRESH), (1, 1, FRESH), (2, 0, FRESH), (0, 1, KEEP), (3, 1, FRESH), (1, 0, KEEP), (0, 1, FRESH)]
    kept = 0
    for task, slot, recall in plan:  # task 0: slotless after phase 3, trained again in 4, slotless again after 5
        learner.begin_phase(task, slot, recall)
        for _ in range(4):
            learner.decision_step()
        learner.end_phase()
        kept += len(learner._accuracies)
        unkept = copy.deepcopy(learner)
        unkept._accuracies.clear()
        assert learner.evaluate_all().tolist() == unkept.evaluate_all().tolist()
    assert kept > 0


def test_per_task_heads_stay_apart_under_keep(synthetic):
    learner = learner_for(synthetic, distill_weight=0.0)
    run_stream(learner, [(0, 0, FRESH)], steps=5)
    head_of_0 = [t.clone() for t in learner.heads[0]]
    run_stream(learner, [(1, 0, KEEP)], steps=5)
    assert learner.slot_of(0) == learner.slot_of(1) == 0
    assert all(torch.equal(a, b) for a, b in zip(learner.heads[0], head_of_0, strict=True))


def test_shared_heads_live_in_the_memory_unit_and_nowhere_else(synthetic):
    """heads="slot": a task with neither a slot nor a memory entry is at chance, and a slot that its users
    left keeps its head for whoever keeps it next."""
    for heads, evicted_source_accuracy in (("task", lambda a: a > 0.6), ("slot", lambda a: a == pytest.approx(0.5))):
        learner = learner_for(synthetic, heads=heads, bank_capacity=1, slots=1)
        run_stream(learner, [(0, 0, FRESH)], steps=20)
        assert learner.evaluate(0).accuracy > 0.6
        run_stream(learner, [(1, 0, FRESH)], steps=20)  # task 0 loses its slot, then its entry to task 1's
        accuracy, source = learner.evaluate(0)
        assert learner.entry_of(0) is None and source == "base" and evicted_source_accuracy(accuracy), (heads, accuracy)
    learner = learner_for(synthetic, heads="slot", slots=2)
    run_stream(learner, [(0, 0, FRESH), (0, 1, FRESH)], steps=5)  # task 0 leaves slot 0 for slot 1
    slot_head = learner.slot_heads[0]
    assert learner.slot_users[0] == set() and slot_head is not None
    learner.begin_phase(2, 0, KEEP)
    assert all(torch.equal(a, b) for a, b in zip(learner.heads[2], slot_head, strict=True))


def test_shared_heads_need_tasks_with_one_number_of_classes(synthetic):
    odd = list(synthetic.tasks)
    task = odd[1]
    odd[1] = dataclasses.replace(task, num_classes=task.num_classes + 1)
    config = dataclasses.replace(synthetic.scenario.learner_config(), heads="slot")
    with pytest.raises(ValueError, match=r"heads='slot'.*same number of classes.*Use heads='task'"):
        ContinualLearner(odd, synthetic.pool_kind, config)


def test_a_nan_loss_is_reported_with_task_and_step_and_never_reaches_the_bank(synthetic):
    poisoned = list(synthetic.tasks)
    bad = poisoned[2]
    inputs = bad.train_inputs.clone()
    inputs[:] = float("nan")
    poisoned[2] = dataclasses.replace(bad, train_inputs=inputs)
    learner = ContinualLearner(poisoned, synthetic.pool_kind, synthetic.scenario.learner_config(), seed=0)
    run_stream(learner, [(0, 0, FRESH)], steps=2)
    bank_before = learner.memory.nbytes, learner.memory.positions()
    learner.begin_phase(2, 1, FRESH)
    delta_before = learner.slots.delta(1).clone()
    with pytest.raises(TrainingDivergedError, match=r"synthetic\[2\].*nan.*decision step 0"):
        learner.decision_step()
    assert learner.phase is None  # closed without a write to the bank
    assert torch.equal(learner.slots.delta(1), delta_before)
    assert (learner.memory.nbytes, learner.memory.positions()) == bank_before
    run_stream(learner, [(1, 1, FRESH)], steps=1)  # the learner goes on; the bank still has no entry of task 2
    assert learner.entry_of(2) is None and all(torch.isfinite(learner.memory.keys).all(1))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda learner: learner.begin_phase(9, 0, FRESH), "task=9"),
        (lambda learner: learner.begin_phase(0, 5, FRESH), "slot=5"),
        (lambda learner: learner.begin_phase(0, 0, 3), "recall=3 is an empty memory position"),
        (lambda learner: learner.begin_phase(0, 0, 99), "recall=99 is out of range"),
        (lambda learner: learner.begin_phase(0, 0, 1.5), "recall=1.5 must be 'fresh', 'keep' or a memory position"),
        (lambda learner: learner.evaluate(-1), "task=-1 is out of range"),
        (lambda learner: learner.begin_phase(0, 0, "reuse"), "recall='reuse'"),
        (lambda learner: learner.decision_step(), "begin_phase"),
        (lambda learner: learner.end_phase(), "no phase to end"),
    ],
)
def test_bad_calls_name_the_argument(synthetic, call, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        call(learner_for(synthetic))


def test_bad_config_and_empty_task_name_the_parameter(synthetic):
    with pytest.raises(ValueError, match="slots=0"):
        LoRASlots(0, 4, 16, 32)
    with pytest.raises(ValueError, match="rank=17"):
        LoRASlots(1, 17, 16, 32)
    for bad, message in [
        ({"lr": 0}, "lr=0"),
        ({"lr": float("inf")}, "lr=inf"),
        ({"eval_size": 0}, "eval_size=0"),
        ({"distill_temperature": 0}, "distill_temperature=0"),
        ({"lora_alpha": -1.0}, "lora_alpha=-1.0"),
        ({"distill_weight": -1}, "distill_weight=-1"),
        ({"retention": "mru"}, "retention='mru'"),
        ({"heads": "class"}, "heads='class' is unknown"),
    ]:
        with pytest.raises(ValueError, match=message):
            LearnerConfig(**bad)
    task = synthetic.tasks[0]
    with pytest.raises(ValueError, match="task empty is empty"):
        dataclasses.replace(task, name="empty", train_labels=task.train_labels[:0])


def test_loading_factors_reproduces_their_delta_in_a_slot():
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(32, 3, generator=generator) @ torch.randn(3, 16, generator=generator)
    slots = LoRASlots(2, 4, 16, 32, alpha=8)
    slots.load(1, compress(delta, rank=3), generator)
    assert torch.allclose(slots.delta(1), delta, atol=1e-4)
    assert slots.A[1, 3].abs().sum() > 0 and torch.count_nonzero(slots.B[1, :, 3]) == 0  # spare direction starts fresh


def test_a_phase_must_be_closed_before_the_next_and_a_rejected_call_changes_nothing(synthetic):
    learner = learner_for(synthetic)
    learner.begin_phase(0, 0, FRESH)
    learner.decision_step()
    with pytest.raises(RuntimeError, match="call end_phase"):
        learner.begin_phase(1, 1, FRESH)
    learner.end_phase()
    state = ([set(users) for users in learner.slot_users], learner.slots.A.clone(), learner.memory.positions())
    with pytest.raises(ValueError, match="recall='reuse'"):
        learner.begin_phase(0, 1, "reuse")
    assert state[0] == learner.slot_users and torch.equal(state[1], learner.slots.A)
    assert state[2] == learner.memory.positions() and learner.phase is None


def test_numpy_integers_from_an_action_space_are_accepted(synthetic):
    learner = learner_for(synthetic)
    run_stream(learner, [(0, 0, FRESH)], steps=1)
    learner.begin_phase(np.int64(0), np.int64(1), np.int64(learner.entry_of(0)))
    assert learner.slot_of(0) == 1


def test_keep_continues_the_slot_as_it_is(synthetic):
    learner = learner_for(synthetic)
    run_stream(learner, [(0, 0, FRESH)], steps=3)
    A, B = learner.slots.A[0].clone(), learner.slots.B[0].clone()
    learner.begin_phase(1, 0, KEEP)
    assert torch.equal(learner.slots.A[0], A) and torch.equal(learner.slots.B[0], B)
    assert learner.slot_users[0] == {0, 1}


def test_a_task_keeps_one_entry_whatever_its_phases_start_from(synthetic):
    learner = learner_for(synthetic)
    run_stream(learner, [(0, 0, FRESH), (1, 1, FRESH), (0, 0, FRESH), (0, 1, KEEP)], steps=1)
    labels = [learner.memory.entries[p].task_label for p in learner.memory.positions()]
    assert sorted(labels) == [0, 1]
