"""Decision steps of several learners as one batched program.

A decision step is ``optimizer_steps`` Adam steps on a batch of the task's cached tensors
and one held-out evaluation. Its training arithmetic is small (a rank-4 update on a batch of
16), so much of its time went to per-operation overhead: autograd, dispatch, the optimizer. Learners that
step together therefore keep their phase parameters as rows of one :class:`PhaseRows` (each
row with its own Adam moments and step count) and run their steps as the same handful of
batched operations. A single learner is the case of one row, so the single and the batched
environment run this same code.

The held-out evaluation stays one learner at a time: it is a pass over ``eval_size`` x
positions x out elements per learner, several times larger than the training batch, and
neither batching it nor blocking it in cache-sized chunks made it faster on this machine
(docs/design.md, "Second stage: the batched environment").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from nsr_env.backbones.base import POOL_BACKWARDS, POOLS
from nsr_env.records import PhaseParameters, StepResult

if TYPE_CHECKING:
    from nsr_env.learner import ContinualLearner


class PhaseRows:
    """What ``count`` phases train (LoRA ``A``, ``B``, head weight and bias) and Adam's moments, one row per
    phase, so that one optimizer step is a few batched operations for every row.

    Each part is a contiguous ``(count, ...)`` block of one flat tensor and a leaf of autograd,
    and its gradient the same block of one flat gradient: autograd sees four leaves, Adam one
    flat tensor. Heads have room for ``classes`` (the most any task has); a row whose task has
    fewer has the rest masked out of its logits, so they receive no gradient and never change.
    """

    betas = (0.9, 0.999)
    eps = 1e-8  # torch.optim.Adam's defaults, which the learner used before

    def __init__(
        self, count: int, rank: int, in_features: int, out_features: int, classes: int, lr: float, batch: tuple
    ) -> None:
        shapes = ((rank, in_features), (out_features, rank), (classes, out_features), (classes,))
        sizes = [count * int(torch.Size(shape).numel()) for shape in shapes]
        self.flat = torch.zeros(sum(sizes))
        self.grad = torch.zeros_like(self.flat)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.row_of = torch.cat([torch.arange(count).repeat_interleave(size // count) for size in sizes])
        self.steps = torch.zeros(count, dtype=torch.float64)
        self.sizes, self.shapes = sizes, shapes
        self._views()
        self.classes = torch.full((count,), classes)
        self.logit_mask = torch.zeros(count, classes)  # 0 for a row's own classes, -inf for the padding
        self.lr = lr
        size, positions, in_features, out_features = batch  # the training batch, gathered here at every step
        self.inputs = torch.empty(count, size, positions, in_features)
        self.base = torch.empty(count, size, positions, out_features)
        self.labels = torch.empty(count, size, dtype=torch.int64)

    def _views(self) -> None:
        """The parts as views of ``flat`` and leaves of autograd, their gradients views of ``grad``."""
        self.parameters = PhaseParameters(*_blocks(self.flat, self.sizes, self.shapes))
        for part, grad in zip(self.parameters, _blocks(self.grad, self.sizes, self.shapes), strict=True):
            part.requires_grad_()
            part.grad = grad  # backward accumulates into it in place: the flat gradient Adam reads

    def __getstate__(self) -> dict:
        """Pickled without the views: pickle keeps neither a leaf's view of ``flat`` nor its ``.grad``."""
        return {key: value for key, value in self.__dict__.items() if key != "parameters"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._views()

    def row_parameters(self, row: int) -> PhaseParameters:
        """The parameters of ``row``'s phase as views of the storage (no gradient), its head cut to its classes."""
        classes = int(self.classes[row])
        A, B, weight, bias = (part.detach()[row] for part in self.parameters)
        return PhaseParameters(A, B, weight[:classes], bias[:classes])

    @property
    def count(self) -> int:
        return len(self.steps)

    def load(self, row: int, start: PhaseParameters) -> PhaseParameters:
        """Begin a phase in ``row`` from ``start``: its parameters copied in, its moments and step count zeroed.
        Returns the row's parameters as views of the storage (no gradient), which change with every step."""
        classes = start.head_weight.shape[0]
        with torch.no_grad():
            mine = self.row_of == row
            self.flat[mine], self.exp_avg[mine], self.exp_avg_sq[mine], self.steps[row] = 0, 0, 0, 0
            self.classes[row] = classes
            self.logit_mask[row] = 0
            self.logit_mask[row, classes:] = -torch.inf
            A, B, weight, bias = self.row_parameters(row)
            A.copy_(start.A)
            B.copy_(start.B)
            weight.copy_(start.head_weight)
            bias.copy_(start.head_bias)
        return PhaseParameters(A, B, weight, bias)

    @property
    def padded(self) -> bool:
        """Some row's task has fewer classes than the heads have room for."""
        return bool((self.classes < self.logit_mask.shape[1]).any())

    @torch.no_grad()
    def adam_step(self, rows: list[int]) -> None:
        """One Adam update of ``rows`` from ``grad``, each row with its own step count (torch.optim.Adam's
        arithmetic, without weight decay); the other rows are left as they are."""
        beta1, beta2 = self.betas
        stepping = torch.zeros(self.count, dtype=torch.bool)
        stepping[rows] = True
        self.steps += stepping
        grad, exp_avg, exp_avg_sq = self.grad, self.exp_avg, self.exp_avg_sq
        if len(rows) == self.count and bool((self.steps == self.steps[0]).all()):  # in step: one count for all
            step = float(self.steps[0])
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = exp_avg_sq.sqrt().div_((1 - beta2**step) ** 0.5).add_(self.eps)
            self.flat.addcdiv_(exp_avg, denom, value=-self.lr / (1 - beta1**step))
            return
        step_size = (self.lr / (1 - beta1**self.steps)).float()[self.row_of]
        correction = (1 - beta2**self.steps).sqrt().float()[self.row_of]
        mask = stepping[self.row_of]
        exp_avg.copy_(torch.where(mask, exp_avg.lerp(grad, 1 - beta1), exp_avg))
        exp_avg_sq.copy_(torch.where(mask, exp_avg_sq * beta2 + (1 - beta2) * grad * grad, exp_avg_sq))
        update = exp_avg / exp_avg_sq.sqrt().div_(correction).add_(self.eps) * step_size
        self.flat.sub_(torch.where(mask, update, 0.0))


def _blocks(flat: torch.Tensor, sizes: list[int], shapes) -> list[torch.Tensor]:
    """``flat`` cut into consecutive blocks of ``sizes``, each viewed as ``(count, *shape)``."""
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    return [flat[end - size : end].view(-1, *shape) for end, size, shape in zip(ends, sizes, shapes, strict=True)]


class AdaptedFeatures(torch.autograd.Function):
    """Head features of a batch through each row's slot, ``pool(base + scale * x A^T B^T)``, as one autograd
    node with a hand-written backward: autograd's dozen small nodes cost more than this arithmetic.

    ``inputs`` (n, b, P, in), ``base`` (n, b, P, out), ``A`` (n, r, in), ``B`` (n, out, r) -> (n, b, out).
    """

    @staticmethod
    def forward(ctx, inputs, base, A, B, scale: float, pool_kind: str) -> torch.Tensor:
        n, size, positions, in_features = inputs.shape
        flat_inputs = inputs.view(n, size * positions, in_features)
        low = flat_inputs @ A.transpose(1, 2)
        out = torch.baddbmm(base.view(n, size * positions, -1), low, B.transpose(1, 2), alpha=scale)
        out = out.view(n * size, positions, -1)
        features = POOLS[pool_kind](out, inplace=True)  # out is ours: no copy; it now holds the nonlinearity's output
        ctx.save_for_backward(flat_inputs, low, B, out)
        ctx.scale, ctx.pool_kind = scale, pool_kind
        return features.view(n, size, -1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        flat_inputs, low, B, output = ctx.saved_tensors
        n, size, out_features = grad.shape
        positions = output.shape[1]
        spread = (grad * (ctx.scale / positions)).view(n * size, 1, out_features)  # the mean's backward, times scale
        grad_out = POOL_BACKWARDS[ctx.pool_kind](spread, output).view(n, size * positions, out_features)
        # products ordered so that the long side is contiguous: several times faster than the naive order here
        grad_B = (low.transpose(1, 2) @ grad_out).transpose(1, 2)
        grad_A = (B.transpose(1, 2) @ grad_out.transpose(1, 2)) @ flat_inputs
        return None, None, grad_A, grad_B, None, None


def decision_steps(learners: Sequence[ContinualLearner]) -> list[StepResult]:
    """One decision step of each learner, batched: the same numbers as stepping them one by one, within
    float rounding. Every learner needs an open phase, and all of them rows of one :class:`PhaseRows`."""
    if not learners:
        return []
    rows = learners[0].rows
    for learner in learners:
        if learner.phase is None:
            raise RuntimeError("call begin_phase(task, slot, recall) before decision_step()")
        if learner.rows is not rows:
            raise ValueError("batched learners must share one PhaseRows (see ContinualLearner.share_rows)")
    indices = [learner.row for learner in learners]
    if len(set(indices)) != len(indices):
        raise ValueError(f"batched learners must hold distinct rows, got rows {indices}")
    for step in range(learners[0].config.optimizer_steps):
        losses = _optimizer_step(rows, learners, indices, step)
    for learner in learners:
        learner.close_step()
    accuracies = [learner.evaluate(learner.phase.task).accuracy for learner in learners]
    return [StepResult(accuracy, loss) for accuracy, loss in zip(accuracies, losses, strict=True)]


def _optimizer_step(
    rows: PhaseRows, learners: Sequence[ContinualLearner], indices: list[int], step: int
) -> list[float]:
    """One Adam step of every learner on a fresh batch of its task; their losses."""
    every = indices == list(range(rows.count))
    live = rows.parameters if every else PhaseParameters(*(part[indices] for part in rows.parameters))
    A, B, weight, bias = live
    inputs, base, labels = (rows.inputs, rows.base, rows.labels) if every else (
        torch.empty_like(rows.inputs[: len(indices)]), torch.empty_like(rows.base[: len(indices)]),
        torch.empty_like(rows.labels[: len(indices)]),
    )  # fmt: skip
    batches = []
    for i, learner in enumerate(learners):
        data = learner.tasks[learner.phase.task]
        batch = torch.randint(len(data.train_labels), (learner.config.batch_size,), generator=learner.generator)
        batches.append(batch)
        torch.index_select(data.train_inputs, 0, batch, out=inputs[i])
        torch.index_select(data.train_base, 0, batch, out=base[i])
        torch.index_select(data.train_labels, 0, batch, out=labels[i])
    n, size, positions, _ = inputs.shape
    if learners[0].memory.routes_per_input:  # the memory gates every input with the slot: one learner at a time
        out = torch.stack([learner._layer_output(inputs[i], base[i], A[i], B[i]) for i, learner in enumerate(learners)])
        features = learners[0].pool(out.view(n * size, positions, -1), inplace=True).view(n, size, -1)
    else:
        features = AdaptedFeatures.apply(inputs, base, A, B, learners[0].slots.scale, learners[0].pool_kind)
    logits = torch.baddbmm(bias[:, None, :], features, weight.transpose(1, 2))
    if rows.padded:
        logits = logits + rows.logit_mask[indices][:, None, :]
    losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(n, size).mean(1)
    adjusted = {}  # learner -> its loss with the protection rule's term, for the rules that add one
    for i, learner in enumerate(learners):
        classes = int(rows.classes[indices[i]])
        own, loss = PhaseParameters(A[i], B[i], weight[i, :classes], bias[i, :classes]), losses[i]
        with_term = learner.protection.loss(loss, features[i], batches[i], own)
        if with_term is not loss:
            adjusted[i] = with_term
    values = losses.tolist()
    for i, loss in adjusted.items():
        values[i] = loss.item()
    for learner, value in zip(learners, values, strict=True):
        if not math.isfinite(value):
            learner.diverged(value, step)
    if adjusted:
        plain = torch.ones(n)
        plain[list(adjusted)] = 0
        total = (losses * plain).sum() + torch.stack(list(adjusted.values())).sum()
    else:
        total = losses.sum()
    rows.grad.zero_()
    total.backward()
    rows.adam_step(indices)
    with torch.no_grad():
        for learner in learners:
            learner.protection.after_step(learner.phase_parameters())
    return values
