"""The candidate interface: a controller recalls among the top-k memory entries, not by memory position.

Positions in a memory are arbitrary, so a policy that recalls by position must learn which of
K position-indexed similarities is the largest and map it to the matching action. With
``candidates=k`` the environment sorts the occupied entries by the similarity the controller
sees (ties: the most recently written first) and describes the first k, best first; recall code
2 + j recalls candidate j. What it shows of each candidate is what a deployed system could know:

- ``candidate_similarity`` and ``candidate_gap`` (to the next candidate, 0 for the last);
- ``candidate_age``: env steps since the entry was last written, over the episode's steps;
- ``candidate_recalls``: how often it was recalled since it was made, ``log1p(n) / log1p(phases)``;
- ``candidate_accuracy``: the held-out accuracy its task had when the entry was last written;
- ``candidate_in_slot``: whether the slot that wrote it still holds that task (the system knows
  which slot wrote which entry, so this needs no task label);
- ``candidate_present``: 1 for a real candidate; missing ones read -1 / 0 / 1 / 0 / 0 / 0 / 0;
- with ``probe_labels``: ``candidate_probe_accuracy``, each candidate's zero-shot accuracy on the
  visit's probe images with their labels (-1 where missing), and ``probe_chance``, 1 / classes.

Write steps are unique among occupied entries, so the order, and with it every observation and
decision, is the same however the memory happens to order its positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANDIDATE_PARTS = (
    "candidate_similarity", "candidate_gap", "candidate_age", "candidate_recalls", "candidate_accuracy",
    "candidate_in_slot", "candidate_present",
)  # fmt: skip
MISSING = {"candidate_similarity": -1.0, "candidate_age": 1.0, "candidate_probe_accuracy": -1.0}
"""The value a part reads for a missing candidate (0 for the others)."""


def candidate_sizes(k: int, probe_labels: bool) -> dict[str, int]:
    """The observation parts of the candidate interface and their sizes."""
    sizes = dict.fromkeys(CANDIDATE_PARTS, k)
    if probe_labels:
        sizes |= {"candidate_probe_accuracy": k, "probe_chance": 1}
    return sizes


@dataclass
class EntryLedger:
    """What the environment remembers about each memory position since the entry there was made."""

    written: np.ndarray  # env step of the last write, -1 where empty
    recalls: np.ndarray
    accuracy: np.ndarray  # the task's held-out accuracy at the last write

    @classmethod
    def empty(cls, capacity: int) -> EntryLedger:
        return cls(np.full(capacity, -1), np.zeros(capacity, dtype=int), np.zeros(capacity))

    def recalled(self, position: int) -> None:
        self.recalls[position] += 1

    def wrote(self, position: int, step: int, accuracy: float, new_entry: bool, occupied: np.ndarray) -> None:
        """A phase end wrote ``position`` (a new entry, or a refresh of the task's own); positions the write
        left empty (an eviction elsewhere) are forgotten."""
        if new_entry:
            self.recalls[position] = 0
        self.written[position], self.accuracy[position] = step, accuracy
        self.written[~occupied], self.recalls[~occupied], self.accuracy[~occupied] = -1, 0, 0.0


def rank_candidates(similarity: np.ndarray, occupied: np.ndarray, written: np.ndarray, k: int) -> list[int]:
    """The positions of the top-``k`` occupied entries: similarity descending, then the most recently
    written first (write steps are unique, so the order does not depend on the positions)."""
    positions = np.flatnonzero(occupied)
    order = np.lexsort((-written[positions], -similarity[positions]))
    return positions[order][:k].tolist()


def candidate_block(
    positions: list[int],
    k: int,
    similarity: np.ndarray,
    ledger: EntryLedger,
    in_slot: list[bool],
    step: int,
    num_steps: int,
    num_phases: int,
    probe_accuracy: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The candidate parts of an observation, each ``(k,)``: the candidates at ``positions`` first,
    then missing ones. ``probe_accuracy`` (per candidate) is given with ``probe_labels``."""
    block = {part: np.full(k, MISSING.get(part, 0.0), dtype=np.float32) for part in CANDIDATE_PARTS}
    n = len(positions)
    scores = np.clip(similarity[positions], -1, 1)
    block["candidate_similarity"][:n] = scores
    if n > 1:
        block["candidate_gap"][: n - 1] = np.clip(scores[:-1] - scores[1:], 0, 1)
    block["candidate_age"][:n] = np.clip((step - ledger.written[positions]) / num_steps, 0, 1)
    block["candidate_recalls"][:n] = np.log1p(ledger.recalls[positions]) / np.log1p(num_phases)
    block["candidate_accuracy"][:n] = ledger.accuracy[positions]
    block["candidate_in_slot"][:n] = in_slot
    block["candidate_present"][:n] = 1.0
    if probe_accuracy is not None:
        block["candidate_probe_accuracy"] = np.full(k, MISSING["candidate_probe_accuracy"], dtype=np.float32)
        block["candidate_probe_accuracy"][:n] = probe_accuracy
    return block
