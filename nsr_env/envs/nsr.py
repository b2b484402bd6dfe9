"""NSREnv: one episode is one pass over a scenario's task stream; one step is one decision step.

At the first step of every phase (a task boundary) the controller's action
``[slot, recall]`` places the phase's task: ``recall`` 0 starts the slot fresh, 1 keeps
it as it is (sharing it with its earlier users, under the protection rule), 2 + j recalls
candidate j, the j-th most similar memory entry (``candidates=k``, the default; see
:mod:`nsr_env.envs.candidates`), or with ``candidates=0`` memory position j. Inside a phase
the task keeps training where it is; the only valid action
there is "continue" (its own slot, keep). At the last step of a phase the slot is
compressed into the bank, so the observation and the mask always describe the bank as the
next action will find it.

The incoming task is recognised the way a deployed system could: with ``probe_size`` > 0,
at every task boundary ``probe_size`` unlabelled images of it are drawn afresh from its
probe split (disjoint from its training and held-out images) with the environment's seeded
generator, and every similarity the controller sees is computed from them (``key``: their
mean adapted-layer input, their mean pooled feature, or ``"arrow"``, how much of them each
stored adapter's own row space captures). ``probe_size=0`` is the paper's idealised exact
key: the mean of the task's whole training set, identical on every return.

Observation and action mask describe the decision to come; ``info`` describes the step
just taken (accuracy, regret, recovery) plus ``hidden_task_id``, the task the next action
applies to, which only an oracle may read (``trained_task_id`` and ``recalled_task_id``,
the hidden tasks of the step just taken and of the entry it recalled, ``retrieval_rank``,
the rank of the task's own entry by the similarity the controller saw, and
``relevant_recall``, whether the recalled entry was its own or of its family, are for analysis).
Masked actions are replaced by the valid action closest in meaning (mid-phase: continue;
at a boundary, an empty bank position: fresh) and flagged in ``info["action_coerced"]``,
so that random actions, as the Gymnasium and SB3 checkers send, are legal;
``strict=True`` raises instead.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from nsr_env import measures
from nsr_env.envs.candidates import EntryLedger, candidate_block, candidate_sizes, rank_candidates
from nsr_env.learner import FRESH, KEEP, embed
from nsr_env.lowrank import arrow_score, compress
from nsr_env.memories import MEMORIES
from nsr_env.prepared import ScenarioData, prepare
from nsr_env.recall import Recall
from nsr_env.scenarios import Scenario, make_scenario


class _Placed(NamedTuple):
    """What :meth:`NSREnv.place` decided, for :meth:`NSREnv.advance`."""

    slot: int
    recall: int
    coerced: bool
    task: int
    boundary: bool
    recalled_task: int
    rank: int


@functools.lru_cache(maxsize=8)
def _prepared(scenario, cache: str | None, data_root: str | None) -> ScenarioData:
    """Envs of one process share the (read-only) tensors of a scenario."""
    return prepare(scenario, cache=cache, data_root=data_root, progress=False)


class NSREnv(gym.Env):
    """Continual learning with LoRA slots and a memory (the SVD TaskKnowledgeBank by default); see the module
    docstring."""

    metadata: ClassVar[dict] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        scenario: str | Scenario = "default",
        render_mode: str | None = None,
        strict: bool = False,
        cache: str | Path | None = None,
        data_root: str | Path | None = None,
        data: ScenarioData | None = None,
        **overrides,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None, 'ansi' or 'rgb_array'")
        self.scenario = make_scenario(scenario, **overrides)
        if data is None:  # envs of one process share a scenario's prepared tensors
            data = _prepared(
                self.scenario, None if cache is None else str(cache), None if data_root is None else str(data_root)
            )
        elif data.scenario != self.scenario:
            raise ValueError(f"data= was prepared for scenario {data.scenario.name!r}, not for this env's scenario")
        self.data = data
        self._check_memory()
        self.render_mode = render_mode
        self.strict = strict
        self.cache, self.data_root = cache, data_root
        S, K = self.scenario.slots, self.scenario.bank_capacity
        k = self.candidates = min(self.scenario.candidates, K)  # never more candidates than memory positions
        self.action_space = spaces.MultiDiscrete([S, Recall.BANK + (k or K)])
        positions = {
            "bank_similarity": K,  # similarity of the incoming task's observed key to each entry; -1 where empty
            "bank_occupied": K,
        }
        sizes = {
            **(candidate_sizes(k, self.scenario.probe_labels) if k else positions),
            "slot_similarity": S,  # ... to the key of each slot's latest task; -1 for an unused slot
            "slot_used": S,
            "slot_staleness": S,  # steps since the slot last trained / episode length; 1 if never
            "slot_current": S,  # the slot the current phase trains (all 0 at a boundary)
            "accuracy": 1,  # held-out accuracy after the last step
            "task_boundary": 1,  # the next step starts a phase
            "phase_progress": 1,  # steps into the phase / phase length
            "bank_fill": 1,
        }
        self.observation_layout: dict[str, slice] = {}
        start = 0
        for name, size in sizes.items():
            self.observation_layout[name] = slice(start, start + size)
            start += size
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(start,), dtype=np.float32)
        self.learner = None

    def _check_memory(self) -> None:
        """One ValueError for an option that a memory without recall (one that routes per input) cannot serve."""
        scenario = self.scenario
        if MEMORIES.get(scenario.memory).recallable:
            return
        others = ", ".join(sorted(m for m in MEMORIES if MEMORIES.get(m).recallable))
        for field, value, why in (
            ("probe_labels", True, "scores the candidates on the visit's probe"),
            ("key", "arrow", "scores memory entries for recall"),
        ):
            if getattr(scenario, field) == value:
                raise ValueError(
                    f"{field}={value!r} {why}, but memory={scenario.memory!r} routes every input through its pool and "
                    f"offers nothing to recall; use a memory with recall ({others}) or drop {field}"
                )

    # --- episode ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        scenario = self.scenario
        self.learner = self.data.learner(seed=int(self.np_random.integers(2**31)))
        self.phase_tasks = scenario.phase_tasks(self.np_random)
        self.step_index = 0
        self.slot_last_trained = np.full(scenario.slots, -1)
        self.slot_latest_task = np.full(scenario.slots, -1)
        self.best_accuracy: dict[int, float] = {}
        self.visit_target = 0.0
        self.recovery = -1
        self.accuracy = 0.0
        self.current_slot: int | None = None
        self.ledger = EntryLedger.empty(scenario.bank_capacity)
        self._static = None
        self._observe_visit()
        return self._observation(), self._info(accuracy=0.0, regret=0.0, boundary=False, slot=-1, recall=-1)

    @property
    def phase(self) -> int:
        return min(self.step_index // self.scenario.phase_length, self.scenario.num_phases - 1)

    @property
    def at_boundary(self) -> bool:
        return self.step_index % self.scenario.phase_length == 0

    @property
    def current_task(self) -> int:
        return int(self.phase_tasks[self.phase])

    def step(self, action):
        placed = self.place(action)
        return self.advance(placed, self.learner.decision_step().accuracy)

    def place(self, action) -> _Placed:
        """The step up to its decision step: the action checked and, at a boundary, the phase begun. The batched
        environment runs the decision steps of many environments between :meth:`place` and :meth:`advance`."""
        if self.learner is None:
            raise RuntimeError("call reset() before step()")
        if self.step_index >= self.scenario.num_steps:
            raise RuntimeError("the episode is over (terminated): call reset() to start a new one")
        slot, recall, coerced = self._checked(action)
        task, boundary = self.current_task, self.at_boundary
        recalled_task, rank = -1, -1
        if boundary:
            rank = self.visit_rank
            position = self._recalled_position(recall)
            choice = FRESH if recall == Recall.FRESH else KEEP if recall == Recall.KEEP else position
            if position is not None:
                recalled_task = self.learner.memory.task_at(position)
                self.ledger.recalled(position)
            self.learner.begin_phase(task, slot, choice)
            self.current_slot = slot
            self.slot_latest_task[slot] = task
            self.visit_target = measures.visit_target(float(self.data.reference[task]), self.best_accuracy.get(task))
            before = self.learner.evaluate(task).accuracy
            at_once = measures.is_recovered(before, self.visit_target, self.scenario.tolerance)
            self.recovery = 0 if at_once else measures.NOT_RECOVERED
        return _Placed(slot, recall, coerced, task, boundary, recalled_task, rank)

    def advance(self, placed: _Placed, accuracy: float):
        """The step after its decision step, given the held-out ``accuracy`` it reached: the same five values
        as :meth:`step`."""
        slot, recall, coerced, task, boundary, recalled_task, rank = placed
        L = self.scenario.phase_length
        self.accuracy = accuracy
        self.slot_last_trained[self.current_slot] = self.step_index
        steps_into_phase = self.step_index % L + 1
        if self.recovery < 0 and measures.is_recovered(self.accuracy, self.visit_target, self.scenario.tolerance):
            self.recovery = steps_into_phase
        self.best_accuracy[task] = max(self.best_accuracy.get(task, 0.0), self.accuracy)
        self.step_index += 1
        terminated = self.step_index == self.scenario.num_steps
        if steps_into_phase == L:
            own = self.learner.entry_of(task)
            written = self.learner.end_phase()
            occupied = self.learner.memory.occupied.numpy()
            self.ledger.wrote(written, self.step_index, self.accuracy, written != own, occupied)
            self.current_slot = None
            if terminated:  # no next task: the last visit's key, scored against the memory as it is now
                self._score_visit()
            else:
                self._observe_visit()
        if boundary or steps_into_phase == L:
            self._static = None
        regret = float(measures.step_regret(self.accuracy, self.data.reference[task]))
        info = self._info(self.accuracy, regret, boundary, slot, recall, coerced, task, recalled_task, rank)
        return self._observation(), -regret, terminated, False, info

    def _observe_visit(self) -> None:
        """Key the incoming task as a controller can: from ``probe_size`` images of its probe split, drawn
        afresh for this visit (or its exact training key when ``probe_size`` is 0), then score the memory."""
        scenario = self.scenario
        task = self.learner.tasks[self.current_task]
        if scenario.probe_size == 0:
            self.visit_inputs, self.visit_key = None, task.key
        else:
            chosen = torch.from_numpy(self.np_random.choice(len(task.probe_inputs), scenario.probe_size, replace=False))
            inputs, base = task.probe_inputs[chosen], task.probe_base[chosen]
            self.visit_probe = inputs, base, task.probe_labels[chosen]
            self.visit_inputs = inputs.reshape(-1, inputs.shape[-1])
            self.visit_key = embed(inputs, base, scenario.key, self.data.pool_kind)
        self._score_visit()

    def _score_visit(self) -> None:
        """Score every memory entry against the visit's key, rank them as the interface does (similarity,
        ties: the most recently written first with ``candidates``, the lowest position without), and
        keep the candidates and their labelled-probe accuracies. Also the hidden rank of the task's own
        entry in that order, for analysis."""
        scenario, learner = self.scenario, self.learner
        if scenario.key == "arrow":
            self.visit_similarity = learner.memory.route_scores(self.visit_inputs)
        else:
            self.visit_similarity = learner.memory.similarities(self.visit_key)
        occupied, similarity = learner.memory.occupied.numpy(), self.visit_similarity.numpy()
        if not learner.memory.recallable:  # a memory that routes per input: nothing to offer, nothing to rank
            occupied = np.zeros_like(occupied)
        if scenario.candidates:
            order = rank_candidates(similarity, occupied, self.ledger.written, scenario.bank_capacity)
            self.candidate_positions = order[: self.candidates]
        else:
            positions = np.flatnonzero(occupied)
            order = positions[np.argsort(-similarity[positions], kind="stable")].tolist()
        own = learner.memory.position_of(self.current_task)
        self.visit_rank = -1 if own is None or own not in order else order.index(own)
        if scenario.probe_labels:  # one batched pass over the candidates, counted in the step's time
            task = learner.tasks[self.current_task]
            self.candidate_probe = learner.zero_shot_accuracy(
                self.candidate_positions, *self.visit_probe, task.num_classes
            ).numpy()

    def _recalled_position(self, recall: int) -> int | None:
        """The memory position a (valid) recall code recalls at this boundary; None for fresh and keep."""
        index = Recall.position(recall)
        if index is None or not self.scenario.candidates:
            return index
        return self.candidate_positions[index]

    def recall_code(self, position: int) -> int | None:
        """The recall code that recalls memory ``position`` at this boundary, or None when it is not
        offered (empty, or with ``candidates`` not among them)."""
        if not (self.learner.memory.recallable and self.learner.memory.occupied[position]):
            return None
        if not self.scenario.candidates:
            return Recall.of_position(position)
        offered = self.candidate_positions
        return Recall.of_position(offered.index(position)) if position in offered else None

    def _relevant(self, task: int, recalled: int) -> int:
        """1 when the recalled entry is the task's own or of its family (e.g. the same pair at another angle),
        0 for any other entry, -1 when nothing was recalled."""
        if recalled < 0:
            return -1
        family = self.learner.tasks[task].family
        return int(recalled == task or (family != "" and self.learner.tasks[recalled].family == family))

    # --- validity --------------------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """Valid choices per action dimension, concatenated ([slot] + [recall]), as MaskablePPO expects."""
        S, choices = self.action_space.nvec
        slots, recalls = np.zeros(S, dtype=bool), np.zeros(choices, dtype=bool)
        if self.learner is None or self.at_boundary:
            slots[:] = True
            recalls[[Recall.FRESH, Recall.KEEP]] = True
            if self.learner is not None and self.scenario.candidates:
                recalls[Recall.BANK : Recall.BANK + len(self.candidate_positions)] = True
            elif self.learner is not None and self.learner.memory.recallable:
                recalls[Recall.BANK :] = self.learner.memory.occupied.numpy()
        else:
            slots[self.current_slot] = True
            recalls[Recall.KEEP] = True
        return np.concatenate([slots, recalls])

    def _checked(self, action) -> tuple[int, int, bool]:
        action = np.asarray(action)
        if action.shape != (2,) or not np.issubdtype(action.dtype, np.integer):
            raise ValueError(f"action={action.tolist()!r} must be two integers [slot, recall]")
        slot, recall = int(action[0]), int(action[1])
        S, choices = self.action_space.nvec
        if not 0 <= slot < S:
            raise ValueError(f"action slot={slot} is out of range: there are {S} slots (0..{S - 1})")
        if not 0 <= recall < choices:
            what = "candidates" if self.scenario.candidates else "bank positions"
            raise ValueError(f"action recall={recall} is out of range: 0 = fresh, 1 = keep, 2..{choices - 1} = {what}")
        mask = self.action_masks()
        slot_ok, recall_ok = mask[slot], mask[S + recall]
        if slot_ok and recall_ok:
            return slot, recall, False
        if self.strict:
            if not self.at_boundary:
                raise ValueError(
                    f"action {[slot, recall]} is masked: inside a phase the only valid action is to continue, "
                    f"[{self.current_slot}, 1] (its slot, keep)"
                )
            if self.scenario.candidates:
                offered = len(self.candidate_positions)
                offer = f"{offered} candidate(s), recall 2..{1 + offered}" if offered else "none: the memory is empty"
                raise ValueError(
                    f"action recall={recall} is masked: candidate {Recall.position(recall)} is missing; this boundary "
                    f"offers {offer}"
                )
            raise ValueError(
                f"action recall={recall} is masked: bank position {Recall.position(recall)} is empty; "
                f"occupied positions: {self.learner.memory.positions()}"
            )
        if not self.at_boundary:
            return self.current_slot, int(Recall.KEEP), True
        return slot, int(Recall.FRESH), True

    # --- what the controller sees ------------------------------------------------------------

    def _observation(self) -> np.ndarray:
        scenario, layout = self.scenario, self.observation_layout
        if self._static is None:  # bank, slots and current task change only at boundaries and phase ends
            self._static = self._static_observation()
        observation = self._static.copy()
        age = (self.step_index - self.slot_last_trained) / scenario.num_steps
        observation[layout["slot_staleness"]] = np.where(self.slot_last_trained >= 0, np.clip(age, 0, 1), 1.0)
        observation[layout["accuracy"]] = self.accuracy
        observation[layout["phase_progress"]] = (self.step_index % scenario.phase_length) / scenario.phase_length
        return observation

    def _static_observation(self) -> np.ndarray:
        scenario, learner, layout = self.scenario, self.learner, self.observation_layout
        observation = np.zeros(self.observation_space.shape, dtype=np.float32)
        occupied = learner.memory.occupied
        if scenario.candidates:
            for part, values in self._candidate_block().items():
                observation[layout[part]] = values
        else:
            similarities = self.visit_similarity.clamp(-1, 1).masked_fill(~occupied, -1.0)
            observation[layout["bank_similarity"]] = similarities.numpy()
            observation[layout["bank_occupied"]] = occupied.numpy()
        used = self.slot_latest_task >= 0
        if scenario.key == "arrow":
            slot_similarity = np.array([arrow_score(compress(learner.slots.adapter(s), rank=learner.slots.rank),
                                                    self.visit_inputs) for s in range(scenario.slots)])  # fmt: skip
        else:
            slot_keys = torch.stack([learner.tasks[max(t, 0)].key for t in self.slot_latest_task])
            slot_similarity = torch.nn.functional.cosine_similarity(slot_keys, self.visit_key[None, :], dim=1).numpy()
        observation[layout["slot_similarity"]] = np.where(used, np.clip(slot_similarity, -1, 1), -1.0)
        observation[layout["slot_used"]] = used
        if self.current_slot is not None:
            observation[layout["slot_current"]][self.current_slot] = 1.0
        observation[layout["task_boundary"]] = self.at_boundary and self.step_index < scenario.num_steps
        observation[layout["bank_fill"]] = len(learner.memory) / scenario.bank_capacity
        return observation

    def _candidate_block(self) -> dict[str, np.ndarray]:
        scenario, memory = self.scenario, self.learner.memory
        positions = self.candidate_positions
        in_slot = [self.learner.slot_of(memory.task_at(position)) is not None for position in positions]
        block = candidate_block(
            positions, self.candidates, self.visit_similarity.numpy(), self.ledger, in_slot, self.step_index,
            scenario.num_steps, scenario.num_phases, self.candidate_probe if scenario.probe_labels else None,
        )  # fmt: skip
        if scenario.probe_labels:
            block["probe_chance"] = np.array([1 / self.learner.tasks[self.current_task].num_classes])
        return block

    def _info(
        self, accuracy, regret, boundary, slot, recall, coerced=False, trained_task=-1, recalled_task=-1, rank=-1
    ) -> dict:
        memory = self.learner.memory
        return {
            "accuracy": float(accuracy),
            "regret": float(regret),
            "recovery_steps": int(self.recovery) if trained_task >= 0 else -1,
            "task_boundary": bool(boundary),
            "phase": int(self.phase if self.step_index == 0 else (self.step_index - 1) // self.scenario.phase_length),
            "slot": int(slot),
            "recall": int(recall),
            "action_coerced": bool(coerced),
            "bank_size": len(memory),
            "bank_bytes": int(memory.nbytes),
            "trained_task_id": int(trained_task),
            "recalled_task_id": int(recalled_task),  # hidden: whose entry this step recalled (analysis only)
            "retrieval_rank": int(rank),  # hidden: rank of the task's own entry by the similarity seen; -1: none
            "relevant_recall": self._relevant(trained_task, recalled_task) if trained_task >= 0 else -1,
            "hidden_task_id": self.current_task,
            "action_mask": self.action_masks(),
        }

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: a text frame of slots, bank and accuracies; ``"rgb_array"``: the same text as an image."""
        if self.render_mode is None or self.learner is None:
            return None
        text = self._text_frame()
        return text if self.render_mode == "ansi" else _text_image(text)

    def _text_frame(self) -> str:
        learner, scenario = self.learner, self.scenario
        boundary = " (boundary)" if self.at_boundary else ""
        lines = [
            f"{scenario.name}: step {self.step_index}/{scenario.num_steps}, phase {self.phase + 1}/"
            f"{scenario.num_phases}, next task {self.current_task}{boundary}, last accuracy {self.accuracy:.3f}"
        ]
        for slot, users in enumerate(learner.slot_users):
            marker = "*" if slot == self.current_slot else " "
            lines.append(f" {marker}slot {slot}: tasks {sorted(users) or '-'}")
        for position in range(scenario.bank_capacity):
            lines.append(f"  bank {position}: {learner.memory.describe(position)}")
        if scenario.candidates and self.at_boundary:
            lines.append(f"  candidates (best first): positions {self.candidate_positions}")
        accuracies = " ".join(f"{a:.2f}" for a in learner.evaluate_all())
        lines.append(f"  accuracy per task: {accuracies}")
        return "\n".join(lines) + "\n"


def _text_image(text: str) -> np.ndarray:
    """The text frame drawn in monospace on a white canvas, as an (H, W, 3) uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines = text.splitlines()
    figure = Figure(figsize=(0.09 * max(map(len, lines)) + 0.4, 0.2 * len(lines) + 0.4), dpi=100)
    figure.text(0.02, 0.98, text, family="monospace", fontsize=10, va="top")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
