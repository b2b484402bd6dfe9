"""The continual learner: LoRA slots, heads, a memory, a protection rule, and one decision step.

A phase puts one task in one slot, started ``"fresh"``, ``"keep"`` (continue the slot as
it is) or from a memory position (recall). Each decision step runs ``optimizer_steps``
Adam steps on the task's cached training tensors, then evaluates it on its held-out
subset. At the phase end the slot is written to the memory. The memory (``config.memory``,
the SVD bank by default) and the protection rule (``config.protect``, distillation by
default) are plug-ins: see :mod:`nsr_env.memories` and :mod:`nsr_env.protection`.

Who is evaluated through what (task ids are known here, never shown to controllers):
- the tasks that *use* a slot: its current task, plus, after ``"keep"``, the earlier
  tasks that used it (the slot is shared: distillation keeps their outputs close to a
  snapshot taken when the sharing began, or whatever the protection rule does);
- a task that uses no slot: its own memory entry if it still has one, else the frozen base
  layer W0 with its last head (``heads="task"``) or at chance (``heads="slot"``).

Heads are per task with ``heads="task"`` (task-incremental: only the adapter is shared by a
slot's users; a task's head stays with it wherever it goes, a memory outside the memory
unit: the paper's idealised setting). With ``heads="slot"`` the head is part of the memory
unit: each slot holds one head, shared by the tasks that share the slot after ``"keep"``
(so naive fine-tuning overwrites what they learned, the classic source of forgetting,
unless the protection rule holds it) and kept by the slot when its users leave; a memory
entry stores the head with the adapter; a task with neither a slot nor an entry has nothing
left of what it learned, and is predicted at chance.

A memory may instead be part of the adapted layer (``routes_per_input``: MoRAM's pool of atoms):
then every prediction, with or without a slot, goes through it with the slot's own atoms,
nothing is recalled, and a fresh start of a task it knows takes back that task's head.

Bank entries hold one task each. The phase end refreshes the task's own entry if it still
has one, otherwise reserves a new entry: another task's training never rewrites an entry,
so recalling a similar task's entry copies it into the slot (no sharing, no distillation).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from nsr_env.adapters import LoRASlots
from nsr_env.backbones.base import POOLS
from nsr_env.config import KEYS, LearnerConfig
from nsr_env.memories import make_memory
from nsr_env.protection import make_protection
from nsr_env.protection.base import PhaseEnd, PhaseStart
from nsr_env.records import Evaluation, Head, PhaseParameters, Prediction, StepResult
from nsr_env.steps import PhaseRows, decision_steps

FRESH, KEEP = "fresh", "keep"


class TrainingDivergedError(FloatingPointError):
    """A loss became NaN or infinite; nothing from that step reached the bank."""


@dataclass(frozen=True, eq=False)
class TaskData:
    """One task's cached tensors: adapted-layer inputs and frozen outputs, local labels."""

    name: str
    num_classes: int
    train_inputs: torch.Tensor  # (N, P, in)
    train_base: torch.Tensor  # (N, P, out)
    train_labels: torch.Tensor  # (N,) int64 in 0..num_classes-1
    eval_inputs: torch.Tensor
    eval_base: torch.Tensor
    eval_labels: torch.Tensor
    probe_inputs: torch.Tensor  # (M, P, in): unlabelled images apart from training and held-out ones
    probe_base: torch.Tensor  # (M, P, out)
    probe_labels: torch.Tensor  # (M,) local labels: only a labelled probe (``probe_labels=True``) shows them
    key: torch.Tensor  # the embedding of the training data (see :func:`embed`): what a memory entry stores
    family: str = ""  # tasks of one non-empty family are versions of each other (one class pair at other angles)

    def __post_init__(self) -> None:
        if len(self.train_labels) == 0 or len(self.eval_labels) == 0:
            raise ValueError(f"task {self.name} is empty: it needs training and held-out samples")


def embed(inputs: torch.Tensor, base: torch.Tensor, kind: str, pool_kind: str) -> torch.Tensor:
    """The key of some samples ``(N, P, in)`` / ``(N, P, out)`` for a ``kind`` in :data:`KEYS`: the mean
    input, or the mean pooled frozen feature for ``"pooled"``."""
    if kind not in KEYS:
        raise ValueError(f"key={kind!r} is unknown; choose one of {list(KEYS)}")
    if kind == "pooled":
        return POOLS[pool_kind](base).mean(dim=0)
    return inputs.mean(dim=(0, 1))


@dataclass
class _Phase:
    """An open phase; what it trains is the learner's row of its PhaseRows (:meth:`phase_parameters`), where
    Adam's moments carry across decision steps, copied back into the slot and heads after each step."""

    task: int
    slot: int
    steps: int = 0


class ContinualLearner:
    """Slots, heads and a memory over a fixed list of tasks; one seeded generator for all randomness."""

    def __init__(self, tasks: list[TaskData], pool_kind: str, config: LearnerConfig, seed: int = 0) -> None:
        if not tasks:
            raise ValueError("the learner needs at least one task")
        if pool_kind not in POOLS:
            raise ValueError(f"pool_kind={pool_kind!r} is unknown; choose one of {sorted(POOLS)}")
        classes = sorted({task.num_classes for task in tasks})
        if config.heads == "slot" and len(classes) > 1:
            raise ValueError(
                f"heads='slot' shares one head among a slot's tasks, so every task needs the same number of "
                f"classes; these tasks have {classes}. Use heads='task'."
            )
        self.tasks = tasks
        self.pool, self.pool_kind = POOLS[pool_kind], pool_kind
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)
        in_features, out_features = tasks[0].train_inputs.shape[2], tasks[0].train_base.shape[2]
        self.slots = LoRASlots(config.slots, config.rank, in_features, out_features, config.lora_alpha)
        for slot in range(config.slots):
            self.slots.reset(slot, self.generator)
        self.memory = make_memory(config, key_dim=tasks[0].key.shape[0])
        if self.memory.capacity != config.bank_capacity:
            raise ValueError(
                f"memory={config.memory!r} built {self.memory.capacity} positions for bank_capacity="
                f"{config.bank_capacity}; its from_config must use bank_capacity"
            )
        self.protection = make_protection(config)
        self.heads: dict[int, Head] = {}  # each task's latest head (with heads="slot": its slot's, when it has one)
        self.slot_heads: list[Head | None] = [None] * config.slots  # with heads="slot": the head each slot holds
        self.slot_users: list[set[int]] = [set() for _ in range(config.slots)]
        self.phase: _Phase | None = None
        self._accuracies: dict[int, tuple[tuple, Evaluation]] = {}  # slotless tasks: (what it depended on, result)
        self._eval_sets = [self._eval_set(task) for task in tasks]
        self.rows, self.row = self.phase_rows(1), 0

    def phase_rows(self, count: int) -> PhaseRows:
        """Storage for the phase parameters of ``count`` learners like this one (see :meth:`share_rows`)."""
        classes = max(task.num_classes for task in self.tasks)
        _, positions, in_features = self.tasks[0].train_inputs.shape
        out_features = self.slots.B.shape[1]
        batch = (self.config.batch_size, positions, in_features, out_features)
        return PhaseRows(count, self.config.rank, in_features, out_features, classes, self.config.lr, batch)

    def share_rows(self, rows: PhaseRows, row: int) -> None:
        """Train in ``row`` of ``rows``, beside other learners whose decision steps run batched with this one's
        (:func:`nsr_env.steps.decision_steps`). Only between phases: an open phase keeps its row."""
        if self.phase is not None:
            raise RuntimeError(f"the phase of task {self.phase.task} is open: share_rows() only between phases")
        self.rows, self.row = rows, self._index(row, "row", rows.count)

    def _eval_set(self, task: TaskData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A fixed held-out subset, copied once into contiguous tensors (evaluation runs every step); the
        task's own tensors when the subset is all of them (no copy: hundreds of tasks stay in memory once)."""
        n = len(task.eval_labels)
        size = n if self.config.eval_size is None else min(self.config.eval_size, n)
        tensors = (task.eval_inputs, task.eval_base, task.eval_labels)
        if size == n and all(tensor.is_contiguous() for tensor in tensors):
            return tensors
        subset = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:size].sort().values
        return task.eval_inputs[subset].contiguous(), task.eval_base[subset].contiguous(), task.eval_labels[subset]

    # --- prediction ----------------------------------------------------------------------

    def _layer_output(self, inputs: torch.Tensor, base: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """The adapted layer's output ``(n * P, out)``: the cached frozen outputs plus the low-rank path (one
        fused addmm), or plus what a memory that is part of the layer computes with the slot."""
        n, positions, in_features = inputs.shape
        if self.memory.routes_per_input:  # the memory and the slot are gated together
            low = self.memory.adapted(inputs.reshape(-1, in_features), A, B, self.slots.scale)
            return base.reshape(n * positions, -1) + low
        low = inputs.reshape(-1, in_features) @ A.T
        return torch.addmm(base.reshape(n * positions, -1), low, B.T, alpha=self.slots.scale)

    def _features(self, inputs: torch.Tensor, base: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """Head features of the adapted layer's output."""
        out = self._layer_output(inputs, base, A, B)
        return self.pool(out.view(inputs.shape[0], inputs.shape[1], -1), inplace=True)  # out is ours: no copy

    def _untrained_head(self, task: int) -> Head:
        """All-zero logits: the chance-level prediction of a task that was never trained."""
        dim = self.tasks[task].train_base.shape[2]
        return Head(torch.zeros(self.tasks[task].num_classes, dim), torch.zeros(self.tasks[task].num_classes))

    def _new_head(self, task: int) -> Head:
        """A fresh head, initialised like ``torch.nn.Linear`` but from the learner's generator."""
        dim, classes = self.tasks[task].train_base.shape[2], self.tasks[task].num_classes
        bound = 1 / math.sqrt(dim)
        weight = (torch.rand(classes, dim, generator=self.generator) * 2 - 1) * bound
        bias = (torch.rand(classes, generator=self.generator) * 2 - 1) * bound
        return Head(weight, bias)

    def slot_of(self, task: int) -> int | None:
        return next((s for s, users in enumerate(self.slot_users) if task in users), None)

    def entry_of(self, task: int) -> int | None:
        """The memory position that still holds this task's latest memory, if any."""
        return self.memory.position_of(task)

    def predictor(self, task: int) -> Prediction:
        """How ``task`` is predicted now: its slot, else its memory entry, else the frozen layer and its last head."""
        slot = self.slot_of(task)
        if slot is not None:
            return Prediction("slot", self.slots.A[slot], self.slots.B[slot], *self.heads[task])
        position = self.entry_of(task)
        empty = torch.zeros(0, self.slots.A.shape[2]), torch.zeros(self.slots.B.shape[1], 0)
        if position is not None and self.memory.routes_per_input:  # no adapter of its own: the layer routes
            return Prediction("bank", *empty, *self.memory.peek(position).head)
        if position is not None:
            f, head = self.memory.peek(position)
            # delta = U S Vh: as a rank-k "LoRA" with A = Vh, B = U S / scale
            return Prediction("bank", f.Vh.float(), f.U.float() * f.S.float() / self.slots.scale, *head)
        kept = self.heads.get(task) if self.config.heads == "task" else None
        weight, bias = kept or self._untrained_head(task)
        return Prediction("base", *empty, weight, bias)

    def evaluate(self, task: int) -> Evaluation:
        """Held-out accuracy of ``task`` and the source of its prediction ("slot", "bank", "base").

        A task without a slot is predicted from stored objects that never change in place (a
        memory entry's factors and head, or a head), so its accuracy is kept until they are
        replaced: the accuracy matrix of a long stream then costs a few evaluations per phase,
        not one per task.
        """
        task = self._index(task, "task", len(self.tasks))
        if self.slot_of(task) is None:
            depends_on = self._stored_prediction(task)
            stored, evaluation = self._accuracies.get(task, ((object(),), None))
            if len(stored) == len(depends_on) and all(a is b for a, b in zip(stored, depends_on, strict=True)):
                return evaluation
        inputs, base, labels = self._eval_sets[task]
        source, A, B, weight, bias = self.predictor(task)
        with torch.no_grad():
            logits = torch.addmm(bias, self._features(inputs, base, A, B), weight.T)
            accuracy = (logits.argmax(1) == labels).float().mean().item()
        evaluation = Evaluation(accuracy, source)
        if source != "slot":
            self._accuracies[task] = (depends_on, evaluation)
        return evaluation

    def _stored_prediction(self, task: int) -> tuple:
        """The objects a slotless task's prediction is made from (see :meth:`predictor`); with a memory that
        routes every input, also its pool, which each write replaces."""
        routed = self.memory.routes_per_input
        position = self.entry_of(task)
        if position is not None:
            stored = self.memory.peek(position)
            parts = tuple(stored.head) if routed else (stored.factors, *stored.head)
        else:
            head = self.heads.get(task) if self.config.heads == "task" else None
            parts = () if head is None else tuple(head)
        return (self.memory.routed_state, *parts) if routed else parts

    def zero_shot_accuracy(
        self, positions: list[int], inputs: torch.Tensor, base: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Accuracy of each memory entry at ``positions`` on labelled samples of a task with ``num_classes``
        classes, as a recall would load it (its adapter into a slot, its head), in one batched pass:
        ``inputs`` (n, P, in) and ``base`` (n, P, out), local ``labels`` (n,). An entry whose head has
        another number of classes scores 0 (a recall would give the task a new head). Counts no use."""
        stored = [self.memory.peek(position) for position in positions]
        if not stored:
            return torch.zeros(0)
        n, per_sample, in_features = inputs.shape
        width = max(item.factors.rank for item in stored)
        A = torch.zeros(len(stored), width, in_features)
        B = torch.zeros(len(stored), base.shape[2], width)  # U S, so that the entry's delta is B A
        weight = torch.zeros(len(stored), num_classes, base.shape[2])
        bias = torch.zeros(len(stored), num_classes)
        fits = torch.zeros(len(stored), dtype=torch.bool)
        for row, item in enumerate(stored):
            rank = item.factors.rank
            A[row, :rank] = item.factors.Vh.float()
            B[row, :, :rank] = item.factors.U.float() * item.factors.S.float()
            if item.head.weight.shape[0] == num_classes:
                weight[row], bias[row], fits[row] = item.head.weight.float(), item.head.bias.float(), True
        with torch.no_grad():
            flat = inputs.reshape(1, n * per_sample, in_features)
            out = base.reshape(1, n * per_sample, -1) + (flat @ A.transpose(1, 2)) @ B.transpose(1, 2)
            features = self.pool(out.view(len(stored) * n, per_sample, -1), inplace=True).view(len(stored), n, -1)
            logits = torch.baddbmm(bias[:, None, :], features, weight.transpose(1, 2))
            accuracy = (logits.argmax(-1) == labels[None, :]).float().mean(dim=1)
        return torch.where(fits, accuracy, torch.zeros(()))

    def evaluate_all(self) -> np.ndarray:
        """Held-out accuracy of every task, as the learner would predict it now: a row of the accuracy matrix."""
        return np.array([self.evaluate(task)[0] for task in range(len(self.tasks))])

    # --- phases --------------------------------------------------------------------------

    def begin_phase(self, task: int, slot: int, recall: str | int) -> None:
        """Put ``task`` in ``slot``: ``"fresh"``, ``"keep"``, or recall memory position ``recall``.

        Every argument is checked before anything changes. The previous phase must have
        been closed with :meth:`end_phase`: its write to the memory can evict an entry, so a
        controller chooses ``recall`` from the memory as it is after that write.
        """
        if self.phase is not None:
            raise RuntimeError(
                f"the phase of task {self.phase.task} is still open: call end_phase() before begin_phase() (the "
                "phase end writes the slot to the memory and may evict an entry, so choose recall after it)"
            )
        task = self._index(task, "task", len(self.tasks))
        slot = self._index(slot, "slot", self.slots.count)
        if recall not in (FRESH, KEEP):
            recall = self._index(recall, "recall", self.memory.capacity, "'fresh', 'keep' or a memory position")
            if not self.memory.occupied[recall]:
                raise ValueError(f"recall={recall} is an empty memory position; occupied: {self.memory.positions()}")
        previous_slot = self.slot_of(task)
        if previous_slot is not None and previous_slot != slot:
            self.slot_users[previous_slot].discard(task)
        if recall == FRESH:
            self.slots.reset(slot, self.generator, self.memory.fresh_start(self.slots.rank, self.generator))
            head, users = self._new_head(task), {task}
            position = self.entry_of(task) if self.memory.routes_per_input else None
            if position is not None:  # a routed memory keeps each task's head beside its atoms (no recall to make)
                head = self.memory.peek(position).head
        elif recall == KEEP:
            kept = self.slot_heads[slot] if self.config.heads == "slot" else self.heads.get(task)
            head = kept or self._new_head(task)
            users = self.slot_users[slot] | {task}
        else:
            factors, stored = self.memory.read(recall)
            self.slots.load(slot, factors, self.generator)
            same_shape = stored.weight.shape[0] == self.tasks[task].num_classes
            head = Head(stored.weight.float(), stored.bias.float()) if same_shape else self._new_head(task)
            users = {task}
        self.heads[task] = Head(head.weight.clone(), head.bias.clone())
        if self.config.heads == "slot":
            self.slot_heads[slot] = self.heads[task]
        self.slot_users[slot] = users
        parameters = self.rows.load(self.row, PhaseParameters(self.slots.A[slot], self.slots.B[slot], *head))
        data = self.tasks[task]
        others = tuple(sorted(users - {task}))
        A, B = self.slots.A[slot].clone(), self.slots.B[slot].clone()  # the slot as this phase starts
        self.protection.begin_phase(
            PhaseStart(
                task=task,
                others=others,
                parameters=parameters,
                heads={other: self.heads[other] for other in others},
                shared_head=self.config.heads == "slot",
                features=lambda: self._features(data.train_inputs, data.train_base, A, B),
            )
        )
        self.phase = _Phase(task, slot)

    @staticmethod
    def _index(value, name: str, size: int, expected: str = "an integer") -> int:
        """``value`` as a Python int in ``range(size)`` (numpy integers from action spaces included)."""
        try:
            index = operator.index(value)
        except TypeError:
            raise ValueError(f"{name}={value!r} must be {expected}") from None
        if not 0 <= index < size:
            raise ValueError(f"{name}={index} is out of range: it must be in 0..{size - 1}")
        return index

    def decision_step(self) -> StepResult:
        """``optimizer_steps`` Adam steps on the current task, then its held-out accuracy; (accuracy, loss).
        Learners that step together batch this (:func:`nsr_env.steps.decision_steps`)."""
        return decision_steps([self])[0]

    def diverged(self, loss: float, step: int) -> None:
        """Close the phase without a write to the memory (the slot keeps its last good state) and raise."""
        phase, self.phase = self.phase, None
        raise TrainingDivergedError(
            f"task {self.tasks[phase.task].name}: loss is {loss} at optimizer step {step} of decision step "
            f"{phase.steps} in slot {phase.slot}; nothing from this decision step was kept and the phase was closed "
            f"without writing to the memory. Check the task's data, or lower lr={self.config.lr} "
            f"(protect={self.config.protect!r})."
        )

    def phase_parameters(self) -> PhaseParameters:
        """What the open phase trains, as views of its row (no gradient): they change with every step."""
        return self.rows.row_parameters(self.row)

    def close_step(self) -> None:
        """The decision step's end: the trained parameters copied back into the slot and the heads."""
        phase = self.phase
        A, B, weight, bias = self.phase_parameters()
        self.slots.A[phase.slot] = A
        self.slots.B[phase.slot] = B
        head = Head(weight.clone(), bias.clone())
        for user in self.slot_users[phase.slot] if self.config.heads == "slot" else (phase.task,):
            self.heads[user] = head
        if self.config.heads == "slot":
            self.slot_heads[phase.slot] = head
        phase.steps += 1

    def _gradients(self, task: int, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``task``'s mean training-loss gradients through ``slot`` as it is: with respect to the adapted layer's
        weight ``(in, out)`` (inputs times output gradients) and to the head's weight ``(classes, features)``."""
        data, head = self.tasks[task], self.heads[task]
        n, positions, in_features = data.train_inputs.shape
        with torch.no_grad():
            out = self._layer_output(data.train_inputs, data.train_base, self.slots.A[slot], self.slots.B[slot])
        with torch.enable_grad():
            out.requires_grad_()
            features = self.pool(out.view(n, positions, -1))
            weight = head.weight.detach().clone().requires_grad_()
            loss = F.cross_entropy(features @ weight.T + head.bias, data.train_labels)
            out_gradient, head_gradient = torch.autograd.grad(loss, (out, weight))
        return data.train_inputs.reshape(-1, in_features).T @ out_gradient, head_gradient

    def end_phase(self) -> int:
        """Write the current slot to the memory as the task's memory; returns the memory position.

        The task's own entry, if it still has one, is refreshed in place; otherwise a new
        entry is made (evicting one by the retention policy when the memory is full).
        """
        if self.phase is None:
            raise RuntimeError("no phase to end: call begin_phase(task, slot, recall) first")
        phase, self.phase = self.phase, None
        self.protection.end_phase(PhaseEnd(phase.task, lambda: self._gradients(phase.task, phase.slot)))
        adapter = self.slots.adapter(phase.slot)
        return self.memory.write(phase.task, adapter, self.heads[phase.task], self.tasks[phase.task].key)
