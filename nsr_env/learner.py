"""The continual learner: LoRA slots, per-task heads, the bank, and one decision step.

A phase puts one task in one slot, started ``"fresh"``, ``"keep"`` (continue the slot as
it is) or from a bank position (recall). Each decision step runs ``optimizer_steps``
Adam steps on the task's cached training tensors, then evaluates it on its held-out
subset. At the phase end the slot is compressed into the bank.

Who is evaluated through what (task ids are known here, never shown to controllers):
- the tasks that *use* a slot: its current task, plus, after ``"keep"``, the earlier
  tasks that used it (the slot is shared: distillation keeps their outputs close to a
  snapshot taken when the sharing began);
- a task that uses no slot: its own bank entry if it still has one, else the frozen base
  layer W0 with its last head.

Heads are per task by default (``heads="task"``, task-incremental: only the adapter is
shared by a slot's users). With ``heads="slot"`` the tasks that share a slot after
``"keep"`` share one head too, so naive fine-tuning overwrites what they learned (the
classic source of forgetting) unless distillation holds it. The shared head is the one of
the slot's current users; a task that keeps a slot nobody uses any more brings its own.

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
from nsr_env.bank import RETENTION_POLICIES, TaskKnowledgeBank

FRESH, KEEP = "fresh", "keep"
HEADS = ("task", "slot")


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
    key: torch.Tensor  # (in,) mean adapted-layer input over the training samples and positions

    def __post_init__(self) -> None:
        if len(self.train_labels) == 0 or len(self.eval_labels) == 0:
            raise ValueError(f"task {self.name} is empty: it needs training and held-out samples")


@dataclass(frozen=True)
class LearnerConfig:
    """What the learner does per decision step, and the memory it has."""

    slots: int = 2
    rank: int = 4
    lora_alpha: float | None = None
    optimizer_steps: int = 1
    batch_size: int = 16
    lr: float = 5e-4
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    bank_capacity: int = 8
    svd_energy: float | None = None
    svd_rank: int | None = None
    bank_float16: bool = False
    retention: str = "lru"
    eval_size: int | None = 200
    heads: str = "task"

    def __post_init__(self) -> None:
        for name in ("slots", "rank", "optimizer_steps", "batch_size", "bank_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.eval_size is not None and self.eval_size < 1:
            raise ValueError(f"eval_size={self.eval_size} must be at least 1, or None for the whole held-out subset")
        for name in ("lr", "distill_temperature"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive finite number")
        if self.lora_alpha is not None and not 0 < self.lora_alpha < math.inf:
            raise ValueError(f"lora_alpha={self.lora_alpha} must be a positive finite number, or None (= rank)")
        if not 0 <= self.distill_weight < math.inf:
            raise ValueError(f"distill_weight={self.distill_weight} must be >= 0 and finite")
        if self.heads not in HEADS:
            raise ValueError(f"heads={self.heads!r} is unknown; choose 'task' (one head per task) or 'slot' (shared)")
        if self.retention not in RETENTION_POLICIES:
            raise ValueError(f"retention={self.retention!r} is unknown; choose one of {sorted(RETENTION_POLICIES)}")


@dataclass
class _Phase:
    task: int
    slot: int
    parameters: list[torch.Tensor]  # A, B, head weight, head bias: trained, copied back after each step
    optimizer: torch.optim.Optimizer  # one Adam per phase: its moments carry across decision steps
    distill: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # other users' heads and logit snapshots
    steps: int = 0


class ContinualLearner:
    """Slots, heads and bank over a fixed list of tasks; one seeded generator for all randomness."""

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
        self.pool = POOLS[pool_kind]
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)
        in_features, out_features = tasks[0].train_inputs.shape[2], tasks[0].train_base.shape[2]
        self.slots = LoRASlots(config.slots, config.rank, in_features, out_features, config.lora_alpha)
        for slot in range(config.slots):
            self.slots.reset(slot, self.generator)
        self.bank = TaskKnowledgeBank(
            capacity=config.bank_capacity,
            key_dim=tasks[0].key.shape[0],
            energy=config.svd_energy,
            rank=config.svd_rank,
            float16=config.bank_float16,
            retention=config.retention,
        )
        self.heads: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.slot_users: list[set[int]] = [set() for _ in range(config.slots)]
        self.task_entry: dict[int, tuple[int, int]] = {}
        self.phase: _Phase | None = None
        self._eval_sets = [self._eval_set(task) for task in tasks]

    def _eval_set(self, task: TaskData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A fixed held-out subset, copied once into contiguous tensors (evaluation runs every step)."""
        n = len(task.eval_labels)
        size = n if self.config.eval_size is None else min(self.config.eval_size, n)
        subset = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:size].sort().values
        return task.eval_inputs[subset].contiguous(), task.eval_base[subset].contiguous(), task.eval_labels[subset]

    # --- prediction ----------------------------------------------------------------------

    def _features(self, inputs: torch.Tensor, base: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """Head features with the low-rank path added to the cached frozen outputs (one fused addmm)."""
        n, positions, in_features = inputs.shape
        low = inputs.reshape(-1, in_features) @ A.T
        out = torch.addmm(base.reshape(n * positions, -1), low, B.T, alpha=self.slots.scale)
        return self.pool(out.view(n, positions, -1), inplace=True)  # out is ours: no copy for the activation

    def _untrained_head(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All-zero logits: the chance-level prediction of a task that was never trained."""
        dim = self.tasks[task].train_base.shape[2]
        return torch.zeros(self.tasks[task].num_classes, dim), torch.zeros(self.tasks[task].num_classes)

    def _new_head(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh head, initialised like ``torch.nn.Linear`` but from the learner's generator."""
        dim, classes = self.tasks[task].train_base.shape[2], self.tasks[task].num_classes
        bound = 1 / math.sqrt(dim)
        weight = (torch.rand(classes, dim, generator=self.generator) * 2 - 1) * bound
        bias = (torch.rand(classes, generator=self.generator) * 2 - 1) * bound
        return weight, bias

    def slot_of(self, task: int) -> int | None:
        return next((s for s, users in enumerate(self.slot_users) if task in users), None)

    def entry_of(self, task: int) -> int | None:
        """The bank position that still holds this task's latest memory, if any."""
        if task not in self.task_entry:
            return None
        position, created = self.task_entry[task]
        entry = self.bank.entries[position]
        return position if entry is not None and entry.created == created and entry.task_label == task else None

    def predictor(self, task: int) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(source, A, B, head weight, head bias) used to evaluate ``task``."""
        slot = self.slot_of(task)
        if slot is not None:
            return ("slot", self.slots.A[slot], self.slots.B[slot], *self.heads[task])
        position = self.entry_of(task)
        if position is not None:
            entry = self.bank.entries[position]
            f = entry.factors
            # delta = U S Vh: as a rank-k "LoRA" with A = Vh, B = U S / scale
            return (
                "bank",
                f.Vh.float(),
                f.U.float() * f.S.float() / self.slots.scale,
                entry.head_weight,
                entry.head_bias,
            )
        weight, bias = self.heads.get(task) or self._untrained_head(task)
        empty = torch.zeros(0, self.slots.A.shape[2]), torch.zeros(self.slots.B.shape[1], 0)
        return ("base", *empty, weight, bias)

    def evaluate(self, task: int) -> tuple[float, str]:
        """Held-out accuracy of ``task`` and the source of its prediction ("slot", "bank", "base")."""
        task = self._index(task, "task", len(self.tasks))
        inputs, base, labels = self._eval_sets[task]
        source, A, B, weight, bias = self.predictor(task)
        with torch.no_grad():
            logits = torch.addmm(bias, self._features(inputs, base, A, B), weight.T)
            accuracy = (logits.argmax(1) == labels).float().mean().item()
        return accuracy, source

    def evaluate_all(self) -> np.ndarray:
        """Held-out accuracy of every task, as the learner would predict it now: a row of the accuracy matrix."""
        return np.array([self.evaluate(task)[0] for task in range(len(self.tasks))])

    # --- phases --------------------------------------------------------------------------

    def begin_phase(self, task: int, slot: int, recall: str | int) -> None:
        """Put ``task`` in ``slot``: ``"fresh"``, ``"keep"``, or recall bank position ``recall``.

        Every argument is checked before anything changes. The previous phase must have
        been closed with :meth:`end_phase`: its write to the bank can evict an entry, so a
        controller chooses ``recall`` from the bank as it is after that write.
        """
        if self.phase is not None:
            raise RuntimeError(
                f"the phase of task {self.phase.task} is still open: call end_phase() before begin_phase() (the "
                "phase end writes the slot to the bank and may evict an entry, so choose recall after it)"
            )
        task = self._index(task, "task", len(self.tasks))
        slot = self._index(slot, "slot", self.slots.count)
        if recall not in (FRESH, KEEP):
            recall = self._index(recall, "recall", self.bank.capacity, "'fresh', 'keep' or a bank position")
            if self.bank.entries[recall] is None:
                raise ValueError(f"recall={recall} is an empty bank position; occupied: {self.bank.positions()}")
        previous_slot = self.slot_of(task)
        if previous_slot is not None and previous_slot != slot:
            self.slot_users[previous_slot].discard(task)
        if recall == FRESH:
            self.slots.reset(slot, self.generator)
            head, users = self._new_head(task), {task}
        elif recall == KEEP:
            sharers = self.slot_users[slot] - {task}
            if self.config.heads == "slot" and sharers:
                head = self.heads[min(sharers)]
            else:
                head = self.heads.get(task) or self._new_head(task)
            users = self.slot_users[slot] | {task}
        else:
            entry = self.bank.touch(recall)
            self.slots.load(slot, entry.factors, self.generator)
            same_shape = entry.head_weight.shape[0] == self.tasks[task].num_classes
            head = (entry.head_weight.float(), entry.head_bias.float()) if same_shape else self._new_head(task)
            users = {task}
        self.heads[task] = (head[0].clone(), head[1].clone())
        self.slot_users[slot] = users
        parameters = [t.clone().requires_grad_() for t in (self.slots.A[slot], self.slots.B[slot], *head)]
        optimizer = torch.optim.Adam(parameters, lr=self.config.lr, fused=True)
        distill = self._snapshots(task, slot, users - {task}, parameters)
        self.phase = _Phase(task, slot, parameters, optimizer, distill)

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

    def _snapshots(self, task: int, slot: int, others: set[int], parameters: list[torch.Tensor]) -> list:
        """(head weight, head bias, logits) per other user: their logits on the current task's inputs, taken as
        this phase starts sharing the slot. A shared head (``heads="slot"``) is the one being trained: one
        term, through the trained parameters."""
        if self.config.distill_weight == 0 or not others:
            return []
        data = self.tasks[task]
        with torch.no_grad():
            features = self._features(data.train_inputs, data.train_base, self.slots.A[slot], self.slots.B[slot])
            if self.config.heads == "slot":
                weight, bias = parameters[2:]
                return [(weight, bias, features @ weight.T + bias)]
            return [(*self.heads[u], features @ self.heads[u][0].T + self.heads[u][1]) for u in sorted(others)]

    def decision_step(self) -> tuple[float, float]:
        """``optimizer_steps`` Adam steps on the current task, then its held-out accuracy; (accuracy, loss)."""
        if self.phase is None:
            raise RuntimeError("call begin_phase(task, slot, recall) before decision_step()")
        phase, config = self.phase, self.config
        data = self.tasks[phase.task]
        A, B, weight, bias = phase.parameters
        optimizer = phase.optimizer
        temperature = config.distill_temperature
        for step in range(config.optimizer_steps):
            batch = torch.randint(len(data.train_labels), (config.batch_size,), generator=self.generator)
            features = self._features(data.train_inputs[batch], data.train_base[batch], A, B)
            loss = F.cross_entropy(features @ weight.T + bias, data.train_labels[batch])
            for other_weight, other_bias, snapshot in phase.distill:
                student = F.log_softmax((features @ other_weight.T + other_bias) / temperature, dim=1)
                teacher = F.softmax(snapshot[batch] / temperature, dim=1)
                loss = loss + config.distill_weight * temperature**2 * F.kl_div(student, teacher, reduction="batchmean")
            if not torch.isfinite(loss):
                self.phase = None  # closed without a write to the bank; the slot keeps its last good state
                raise TrainingDivergedError(
                    f"task {data.name}: loss is {loss.item()} at optimizer step {step} of decision step "
                    f"{phase.steps} in slot {phase.slot}; nothing from this decision step was kept and the phase "
                    f"was closed without writing to the bank. Check the task's data, or lower lr={config.lr}."
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            self.slots.A[phase.slot] = A
            self.slots.B[phase.slot] = B
        head = (weight.detach().clone(), bias.detach().clone())
        for user in self.slot_users[phase.slot] if self.config.heads == "slot" else (phase.task,):
            self.heads[user] = head
        phase.steps += 1
        accuracy, _ = self.evaluate(phase.task)
        return accuracy, loss.item()

    def end_phase(self) -> int:
        """Compress the current slot into the bank as the task's memory; returns the bank position.

        The task's own entry, if it still has one, is refreshed in place; otherwise a new
        entry is reserved (evicting one by the retention policy when the bank is full).
        """
        if self.phase is None:
            raise RuntimeError("no phase to end: call begin_phase(task, slot, recall) first")
        phase, self.phase = self.phase, None
        weight, bias = self.heads[phase.task]
        data = self.tasks[phase.task]
        low_rank = (self.slots.scale * self.slots.B[phase.slot], self.slots.A[phase.slot])  # delta, unformed
        position = self.bank.reserve(low_rank, weight, bias, data.key, phase.task, position=self.entry_of(phase.task))
        self.task_entry[phase.task] = (position, self.bank.entries[position].created)
        return position
