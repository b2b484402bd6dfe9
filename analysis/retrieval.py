"""Retrieval at scale: does a task's key surface its own past adapter, and how does that degrade as memory grows?

:func:`run_retrieval` trains each of a scenario's tasks alone in one fresh slot, stores the
first N tasks' adapters in a :class:`~nsr_env.memories.svd.TaskKnowledgeBank` compressed at
each SVD energy, and queries the bank with fresh probe draws of every stored task under each
key kind. It writes into ``OUT/retrieval`` (``nsr report OUT`` reads them, see
:mod:`analysis.retrieval_report`):

- ``queries.csv``: one row per query, :data:`analysis.retrieval_report.QUERY_COLUMNS`;
- ``tasks.csv``: one row per task, :data:`analysis.retrieval_report.TASK_COLUMNS` then the rank and
  bytes of its entry per energy (:func:`analysis.retrieval_report.energy_columns`; the bytes count
  factors, head and the stored key of the first key kind);
- ``config.json``: what was run, and how long it took.

A query of task t draws ``probe_size`` images from t's probe split (numpy generator seeded by
``(seed, t, probe)``), so the same draws serve every energy, size and key: comparisons between
them are paired. ``probe_size=0`` queries with the exact key, the task's whole training set.
"input" and "pooled" keys are embeddings of the data alone, so the energy cannot change their
scores or ranking: their rows repeat across energies, recorded so the figures show every
(key, energy). "arrow" scores each entry by its own compressed factors, so the energy matters there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.retrieval_report import QUERY_COLUMNS, energy_columns
from nsr_env.atomic import atomic_write
from nsr_env.config import KEYS
from nsr_env.learner import FRESH, TaskData, embed
from nsr_env.lowrank import LowRank
from nsr_env.memories.svd import TaskKnowledgeBank
from nsr_env.prepared import ScenarioData
from nsr_env.records import Head
from nsr_env.scenarios import make_scenario, prepare

__all__ = ["DEFAULT_SIZES", "RetrievalRun", "arrow_scores", "run_retrieval", "train_alone"]

DEFAULT_SIZES: tuple[int | str, ...] = (10, 20, 50, 100, 200, "all")
"""Numbers of stored entries; ``"all"`` is every task of the scenario. Sizes above the task count are left out."""
DEFAULT_STEPS = 40
"""Decision steps per task (a* trains 120): on ``long`` 87% of the tasks then end within 0.03 of their a*
(20 steps: 67%, 30: 81%, 60: 91%), on ``default`` all five."""
STORED_KEY = {"input": "input", "pooled": "pooled", "arrow": "input"}
"""The key a bank stores per key kind; Arrow scores the entries' factors and never reads it."""


@dataclass(frozen=True)
class TrainedTask:
    """One task trained alone: its adapter ``(scale * B, A)``, its head, its accuracy with and without the adapter."""

    adapter: LowRank
    head: Head
    accuracy: float
    base_accuracy: float


@dataclass(frozen=True)
class RetrievalRun:
    """What :func:`run_retrieval` wrote into ``directory``, as frames."""

    directory: Path
    queries: pd.DataFrame
    tasks: pd.DataFrame
    config: dict


def train_alone(data: ScenarioData, count: int, steps: int, seed: int) -> list[TrainedTask]:
    """The first ``count`` tasks, each trained for ``steps`` decision steps in a fresh slot 0 of one learner.

    The base accuracy is a second evaluation through the learner's prediction path with the
    slot's B zeroed: the frozen layer under the same trained head.
    """
    learner = data.learner(seed)
    trained = []
    for task in range(count):
        learner.begin_phase(task, 0, FRESH)
        for _ in range(steps):
            learner.decision_step()
        learner.end_phase()
        accuracy = learner.evaluate(task).accuracy
        adapter = tuple(part.clone() for part in learner.slots.adapter(0))
        learner.slots.B[0] = 0  # the next fresh phase resets the slot anyway
        base_accuracy = learner.evaluate(task).accuracy
        trained.append(TrainedTask(adapter, learner.heads[task], accuracy, base_accuracy))
    return trained


def _probe(task: TaskData, size: int, probes: int, seed: int, index: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``probes`` draws of ``size`` probe images of task ``index`` as (inputs, base); the training set if size is 0."""
    if size == 0:
        return [(task.train_inputs, task.train_base)] * probes
    draws = []
    for probe in range(probes):
        chosen = np.random.default_rng([seed, index, probe]).choice(len(task.probe_inputs), size, replace=False)
        draws.append((task.probe_inputs[chosen], task.probe_base[chosen]))
    return draws


def arrow_scores(bank: TaskKnowledgeBank, batches: Sequence[torch.Tensor]) -> torch.Tensor:
    """``bank.route_scores`` of many queries: each batch ``(q, n, in)`` holds q queries of n inputs; returns
    ``(total q, capacity)``, the batches' rows in order, -inf where empty.

    ``route_scores`` runs one product per entry and query; this stacks every entry's
    right-singular vectors once, each scaled by the square root of its weight (zero-padded to the
    largest rank), so a batch's scores are one product and one norm: a bank of hundreds of entries
    answers a thousand queries in seconds.
    """
    positions = bank.positions()
    factors = [bank.entries[position].factors for position in positions]
    width = max((f.rank for f in factors), default=0)
    vh = torch.zeros(len(factors), width, batches[0].shape[-1])
    for row, f in enumerate(factors):
        energy = f.S.float() ** 2
        vh[row, : f.rank] = f.Vh.float() * (energy / energy.sum()).sqrt()[:, None]  # weighted: a norm is the score
    directions = vh.flatten(0, 1).T  # (in, entries * width)
    rows = []
    for batch in batches:
        projected = torch.nn.functional.normalize(batch.float(), dim=-1) @ directions
        rows.append(torch.linalg.vector_norm(projected.unflatten(-1, vh.shape[:2]), dim=-1).mean(dim=1))
    scores = torch.full((sum(len(batch) for batch in batches), bank.capacity), float("-inf"))
    scores[:, positions] = torch.cat(rows)
    return scores


def _query_rows(bank: TaskKnowledgeBank, scores: torch.Tensor, size: int, probes: int) -> dict[str, np.ndarray]:
    """Per query of the first ``size`` tasks (task-major, ``probes`` each) against the first ``size`` positions
    (``scores``): the top entry's task and score, the own entry's score and rank, the best other score."""
    scores = scores.double().numpy()
    tasks = np.repeat(np.arange(size), probes)
    own_position = np.array([bank.position_of(task) for task in range(size)])[tasks]
    rows = np.arange(len(tasks))
    own = scores[rows, own_position]
    positions = np.arange(size)
    ahead = (scores > own[:, None]) | ((scores == own[:, None]) & (positions < own_position[:, None]))
    top = scores.argmax(axis=1)  # the first of equal maxima, as ``ahead`` breaks ties
    others = scores.copy()
    others[rows, own_position] = -np.inf
    best_other = others.max(axis=1)
    return {
        "task": tasks,
        "probe": np.tile(np.arange(probes), size),
        "top_task": np.array([bank.task_at(position) for position in top]),
        "top_score": scores[rows, top],
        "own_score": own,
        "own_rank": 1 + ahead.sum(axis=1),
        "best_other_score": np.where(np.isfinite(best_other), best_other, np.nan),
    }


def _bank(trained: list[TrainedTask], keys: torch.Tensor, energy: float) -> TaskKnowledgeBank:
    """A bank holding the tasks' entries in order (task i at position i), compressed at ``energy``."""
    bank = TaskKnowledgeBank(capacity=len(trained), key_dim=keys.shape[1], energy=energy)
    for task, (item, key) in enumerate(zip(trained, keys, strict=True)):
        bank.reserve(item.adapter, item.head.weight, item.head.bias, key, task)
    return bank


def _sizes(sizes: tuple[int | str | None, ...], count: int) -> list[int]:
    """Sizes (checked by :func:`_check`) as sorted distinct entry counts, ``"all"`` (or None) as ``count``;
    those above ``count`` left out."""
    resolved = set()
    for size in sizes:
        if size in ("all", None):
            resolved.add(count)
        elif size <= count:
            resolved.add(size)
    if not resolved:
        raise ValueError(f"sizes={list(sizes)} are all above the scenario's {count} tasks; add 'all' or a smaller size")
    return sorted(resolved)


def _check(sizes: tuple, energies: tuple[float, ...], keys: tuple[str, ...], probes: int, steps: int) -> None:
    """One ValueError naming the first bad argument, before any data is loaded."""
    for size in sizes:
        if size not in ("all", None) and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"sizes holds {size!r}: each size must be an integer >= 1 or 'all'")
    if not energies or not keys:
        raise ValueError(f"energies={list(energies)} and keys={list(keys)} must each name at least one")
    for energy in energies:
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
            raise ValueError(f"energies holds {energy!r}: each energy must be a number in (0, 1]")
    for key in keys:
        if key not in KEYS:
            raise ValueError(f"keys holds {key!r}: choose from {list(KEYS)}")
    for name, value in (("probes", probes), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")


def _best_seconds(call: Callable[[], object], repeats: int = 5) -> float:
    """The fastest of a few timed calls, in seconds (the least disturbed by other load)."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return min(timings)


def _recall_timings(
    banks: dict[str, TaskKnowledgeBank], queries: dict[str, torch.Tensor], flattened: list[torch.Tensor]
) -> dict[str, float]:
    """Milliseconds per query against the full bank: each key's cosine similarities, and Arrow's scores
    through ``route_scores`` (one product per entry) and through :func:`arrow_scores` (one task's probes)."""
    timings = {
        f"{kind}_similarities": 1e3 * _best_seconds(lambda kind=kind: banks[kind].similarities(queries[kind][0]))
        for kind in queries
    }
    bank = next(iter(banks.values()))
    timings["arrow_route_scores"] = 1e3 * _best_seconds(lambda: bank.route_scores(flattened[0][0]))
    timings["arrow_scores"] = 1e3 * _best_seconds(lambda: arrow_scores(bank, flattened[:1])) / len(flattened[0])
    return timings


def run_retrieval(
    scenario: str = "long",
    out: str | Path = "results",
    sizes: Iterable[int | str | None] = DEFAULT_SIZES,
    energies: Iterable[float] = (0.9, 0.99, 1.0),
    keys: Iterable[str] = KEYS,
    probes: int = 5,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    *,
    cache: str | Path | None = None,
    data_root: str | Path | None = None,
    progress: bool = True,
    **overrides,
) -> RetrievalRun:
    """Run the retrieval experiment on a registered scenario (fields replaced by ``overrides``) into ``out/retrieval``.

    Only the first ``max(sizes)`` tasks are trained (``seed`` seeds the learner and the probe
    draws). Per energy, size N and key, every query of the first N tasks is scored against
    their N entries: cosine similarity of its embedding for "input" and "pooled", Arrow routing
    scores of its flattened probe inputs for "arrow". Per energy one bank per stored key holds
    every trained task in order (task i at position i); an entry's score depends on its own key or
    factors alone, so its first N positions score a query exactly as a bank of just those N
    entries would, and every size reads them from one scoring pass over the full bank.
    """
    sizes, energies, keys = tuple(sizes), tuple(energies), tuple(keys)
    _check(sizes, energies, keys, probes, steps)
    started = time.perf_counter()
    config = make_scenario(scenario, **overrides)
    data = prepare(config, cache=cache, data_root=data_root, progress=progress)
    sizes = _sizes(sizes, len(data.tasks))
    count = sizes[-1]
    prepared = time.perf_counter()
    trained = train_alone(data, count, steps, seed)
    finished_training = time.perf_counter()
    tasks = data.tasks[:count]
    draws = [_probe(task, config.probe_size, probes, seed, index) for index, task in enumerate(tasks)]
    stored = {
        kind: torch.stack([embed(task.train_inputs, task.train_base, kind, data.pool_kind) for task in tasks])
        for kind in dict.fromkeys(STORED_KEY[key] for key in keys)
    }
    queries = {
        kind: torch.stack([embed(*draw, kind, data.pool_kind) for task in draws for draw in task])
        for kind in ("input", "pooled")
        if kind in keys
    }
    flattened = [torch.stack([inputs.reshape(-1, inputs.shape[-1]) for inputs, _ in task]) for task in draws]
    frames, task_frame = [], _task_frame(tasks, trained, data.reference[:count])
    for energy in energies:
        banks = {kind: _bank(trained, stored[kind], energy) for kind in stored}
        for key in keys:
            bank = banks[STORED_KEY[key]]
            scores = arrow_scores(bank, flattened) if key == "arrow" else bank.similarities(queries[key])
            for size in sizes:  # the first ``size`` entries: what a bank of just those entries would score
                rows = _query_rows(bank, scores[: size * probes, :size], size, probes)
                frames.append(pd.DataFrame({"energy": energy, "entries": size, "key": key, **rows}))
        rank, nbytes = energy_columns(energy)
        entries = banks[STORED_KEY[keys[0]]].entries
        task_frame[rank] = [entry.factors.rank for entry in entries]
        task_frame[nbytes] = [entry.nbytes for entry in entries]
    scored = time.perf_counter()
    query_frame = pd.concat(frames, ignore_index=True)[list(QUERY_COLUMNS)]
    record = {
        "scenario": scenario, "overrides": overrides, "tasks": count, "sizes": sizes, "energies": list(energies),
        "keys": list(keys), "probes": probes, "probe_size": config.probe_size, "steps": steps, "seed": seed,
        "svd_energy": config.svd_energy, "recall_ms": _recall_timings(banks, queries, flattened),
        "seconds": {"prepare": prepared - started, "train": finished_training - prepared,
                    "score": scored - finished_training, "total": time.perf_counter() - started},
    }  # fmt: skip
    directory = Path(out) / "retrieval"
    atomic_write(directory / "queries.csv", lambda temporary: query_frame.to_csv(temporary, index=False))
    atomic_write(directory / "tasks.csv", lambda temporary: task_frame.to_csv(temporary, index=False))
    atomic_write(directory / "config.json", lambda temporary: temporary.write_text(json.dumps(record, indent=2)))
    return RetrievalRun(directory, query_frame, task_frame, record)


def _task_frame(tasks: list[TaskData], trained: list[TrainedTask], reference: np.ndarray) -> pd.DataFrame:
    accuracy = np.array([item.accuracy for item in trained])
    base = np.array([item.base_accuracy for item in trained])
    return pd.DataFrame({
        "task": np.arange(len(tasks)), "name": [t.name for t in tasks], "family": [t.family for t in tasks],
        "reference": reference, "accuracy": accuracy, "base_accuracy": base, "contribution": accuracy - base,
    })  # fmt: skip
