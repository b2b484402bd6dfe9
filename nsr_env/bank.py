"""TaskKnowledgeBank: SVD-compressed adapters with key embeddings, recall by cosine similarity.

An entry holds one task's adapter delta ``B @ A`` as truncated SVD factors, the task's
head, a key embedding (the mean frozen feature of the task's inputs) and metadata. The
bank has ``capacity`` positions; an entry keeps its position for life, so position ``i``
means the same entry to a controller from one step to the next. When the bank is full,
the retention policy (LRU by default) picks the entry to evict.

Recall scores every position against a query with one matrix product over a unit-norm
key matrix, masked by a boolean occupancy tensor that reserve, eviction and load keep
up to date, so no Python loop runs over the entries.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nsr_env.atomic import atomic_write

BANK_FORMAT = "nsr-env TaskKnowledgeBank"
BANK_VERSION = 1
ENERGY_SLACK = 1e-5  # relative float32 rounding allowed in the energy an energy threshold may drop


class BankFileError(ValueError):
    """A saved bank cannot be read: wrong format or version, truncated, or altered."""


@dataclass(frozen=True, eq=False)
class Factors:
    """Truncated SVD of a delta: ``delta ≈ U @ diag(S) @ Vh``."""

    U: torch.Tensor  # (out, k)
    S: torch.Tensor  # (k,)
    Vh: torch.Tensor  # (k, in)

    @property
    def rank(self) -> int:
        return len(self.S)

    def delta(self) -> torch.Tensor:
        return (self.U.float() * self.S.float()) @ self.Vh.float()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.U, self.S, self.Vh))


def _delta_shape(delta: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[int, int]:
    """(out, in) of a delta matrix or of a ``(left, right)`` pair; a clear error for anything else."""
    if isinstance(delta, torch.Tensor) and delta.dim() == 2:
        return tuple(delta.shape)
    if (
        isinstance(delta, tuple)
        and len(delta) == 2
        and all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in delta)
    ):
        (out, inner), (inner_right, in_) = delta[0].shape, delta[1].shape
        if inner == inner_right:
            return out, in_
    shapes = tuple(delta.shape) if isinstance(delta, torch.Tensor) else [tuple(getattr(t, "shape", ())) for t in delta]
    raise ValueError(f"delta has shape {shapes}; compress needs a 2-D (out, in) weight change or a (left, right) pair")


def _svd(delta: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Thin SVD of ``delta``, or of ``left @ right`` given as the pair, without forming the product:
    QR of both factors, then the SVD of the small r x r core (exact, and ~100x cheaper for a LoRA)."""
    if isinstance(delta, torch.Tensor):
        return torch.linalg.svd(delta.detach().float(), full_matrices=False)
    left, right = (t.detach().float() for t in delta)
    q_left, r_left = torch.linalg.qr(left)
    q_right, r_right = torch.linalg.qr(right.T)
    u, s, vh = torch.linalg.svd(r_left @ r_right.T)
    return q_left @ u, s, vh @ q_right.T


def compress(
    delta: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    energy: float | None = None,
    rank: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Factors:
    """Truncated SVD of ``delta`` (a matrix, or a pair ``(left, right)`` standing for
    ``left @ right``, as a LoRA's ``(scale * B, A)``): keep a fixed ``rank``, or the fewest components whose
    squared singular values reach the fraction ``energy`` of the total (Eckart–Young: the
    dropped components' energy is exactly the squared Frobenius error). The energy they
    may drop, ``(1 - energy) * total``, gets a relative ``ENERGY_SLACK`` so that rounding at
    an exact boundary adds no component, while ``energy=1`` stays lossless. Components below
    the numerical-rank tolerance (``max(shape) * eps * largest``) are always dropped, so a
    zero delta compresses to rank 0. The factors own compact storage of the kept part only.
    """
    if (energy is None) == (rank is None):
        raise ValueError("compress needs exactly one of energy= (a fraction in (0, 1]) or rank= (an integer >= 0)")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"energy={energy} must be in (0, 1]")
    if rank is not None and rank < 0:
        raise ValueError(f"rank={rank} must be >= 0")
    shape = _delta_shape(delta)
    u, s, vh = _svd(delta)
    nonzero = int((s > s[0] * max(shape) * torch.finfo(torch.float32).eps).sum()) if len(s) else 0
    if rank is not None:
        keep = min(rank, nonzero)
    else:
        squares = s.double() ** 2
        dropped = squares.flip(0).cumsum(0).flip(0)  # dropped[k]: energy left out by keeping k components
        allowed = (1 - energy) * squares.sum() * (1 + ENERGY_SLACK)
        keep = min(int((dropped > allowed).sum()), nonzero)
    if dtype == torch.float16 and keep and s[0] > torch.finfo(torch.float16).max:
        raise ValueError(
            f"delta's largest singular value {s[0].item():.4g} overflows float16; store this bank in float32"
        )

    def own(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)

    return Factors(own(u[:, :keep]), own(s[:keep]), own(vh[:keep]))


@dataclass(eq=False)
class BankEntry:
    """One reserved adapter. ``task_label`` is hidden: for analysis, never for controllers.

    ``created`` and ``last_use`` are bank clock times; ``visits`` counts the uses of the
    entry: its first reserve, each refresh in place, and each recall (``touch``).
    """

    factors: Factors
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    key: torch.Tensor
    task_label: int
    created: int
    last_use: int
    visits: int = 1

    @property
    def nbytes(self) -> int:
        tensors = (self.head_weight, self.head_bias, self.key)
        return self.factors.nbytes + sum(t.numel() * t.element_size() for t in tensors)


RetentionPolicy = Callable[[list[BankEntry]], int]
"""Given the occupied entries in position order, return the index (into that list) to evict."""


def evict_least_recently_used(entries: list[BankEntry]) -> int:
    """LRU: the entry reserved, refreshed or recalled longest ago."""
    return min(range(len(entries)), key=lambda i: (entries[i].last_use, entries[i].created))


def evict_oldest(entries: list[BankEntry]) -> int:
    """FIFO: the entry first reserved longest ago; refreshes and recalls do not renew it."""
    return min(range(len(entries)), key=lambda i: entries[i].created)


def evict_least_visited(entries: list[BankEntry]) -> int:
    """LFU: the entry with the fewest visits (reserves, refreshes, recalls); ties by LRU."""
    return min(range(len(entries)), key=lambda i: (entries[i].visits, entries[i].last_use))


RETENTION_POLICIES: dict[str, RetentionPolicy] = {
    "lru": evict_least_recently_used,
    "fifo": evict_oldest,
    "lfu": evict_least_visited,
}


@dataclass(eq=False)
class TaskKnowledgeBank:
    """At most ``capacity`` compressed adapters, recalled by key similarity.

    ``entries``, ``keys`` and ``occupied`` are read-only views for callers; change the
    bank through :meth:`reserve` and :meth:`touch` only, which keep them consistent.
    """

    capacity: int
    key_dim: int
    energy: float | None = None
    rank: int | None = None
    float16: bool = False
    retention: str = "lru"
    entries: list[BankEntry | None] = field(init=False, repr=False)
    keys: torch.Tensor = field(init=False, repr=False)  # (capacity, key_dim) unit-norm rows, zero where empty
    occupied: torch.Tensor = field(init=False, repr=False)  # (capacity,) bool: which positions hold an entry
    clock: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"bank_capacity={self.capacity} must be at least 1")
        if self.key_dim < 1:
            raise ValueError(f"key_dim={self.key_dim} must be at least 1")
        if self.retention not in RETENTION_POLICIES:
            raise ValueError(f"retention={self.retention!r} is unknown; choose one of {sorted(RETENTION_POLICIES)}")
        if self.energy is not None and self.rank is not None:
            raise ValueError("give the bank svd_energy or svd_rank, not both")
        if self.energy is None and self.rank is None:
            self.energy = 0.99
        self.entries = [None] * self.capacity
        self.keys = torch.zeros(self.capacity, self.key_dim)
        self.occupied = torch.zeros(self.capacity, dtype=torch.bool)

    def __len__(self) -> int:
        return int(self.occupied.sum())

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def reserve(
        self,
        delta: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        head_weight: torch.Tensor,
        head_bias: torch.Tensor,
        key: torch.Tensor,
        task_label: int,
        position: int | None = None,
    ) -> int:
        """Compress ``delta`` and store it with its head and key; return its position.

        With ``position`` of an occupied entry, that entry is refreshed in place (a revisit:
        same ``created``, one more visit). Otherwise the entry goes to the lowest free
        position, evicting one by the retention policy when the bank is full.
        """
        if position is not None and not (isinstance(position, int) and 0 <= position < self.capacity):
            raise ValueError(f"position={position!r} is not a bank position; use 0..{self.capacity - 1} or None")
        if key.shape != (self.key_dim,):
            raise ValueError(f"key has shape {tuple(key.shape)}; this bank's keys are ({self.key_dim},)")
        parts = delta if isinstance(delta, tuple) else (delta,)
        checks = [("delta", t) for t in parts] + [("head_weight", head_weight), ("head_bias", head_bias), ("key", key)]
        for name, tensor in checks:
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name} holds NaN or infinite values; the bank stores only finite adapters")
        dtype = torch.float16 if self.float16 else torch.float32
        factors = compress(delta, energy=self.energy if self.rank is None else None, rank=self.rank, dtype=dtype)
        now = self.tick()
        previous = None if position is None else self.entries[position]
        if previous is not None:
            created, visits = previous.created, previous.visits + 1
        else:
            position = self._free_position()
            created, visits = now, 1
        self.entries[position] = BankEntry(
            factors, head_weight.detach().clone(), head_bias.detach().clone(), key.detach().clone().float(),
            int(task_label), created, now, visits,
        )  # fmt: skip
        self.keys[position] = torch.nn.functional.normalize(key.detach().float(), dim=0)
        self.occupied[position] = True
        return position

    def _free_position(self) -> int:
        """The lowest empty position, after evicting the retention policy's victim if the bank is full."""
        if not self.occupied.all():
            return int((~self.occupied).nonzero()[0])
        victim = RETENTION_POLICIES[self.retention](self.entries)  # full: position order is list order
        self.entries[victim] = None
        self.keys[victim] = 0
        self.occupied[victim] = False
        return victim

    def similarities(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of ``query`` (key_dim,) or (Q, key_dim) to every position; -inf where empty."""
        if query.shape[-1:] != (self.key_dim,) or query.dim() > 2:
            raise ValueError(f"query has shape {tuple(query.shape)}; use ({self.key_dim},) or (Q, {self.key_dim})")
        scores = torch.nn.functional.normalize(query.float(), dim=-1) @ self.keys.T
        return scores.masked_fill(~self.occupied, float("-inf"))

    def recall(self, query: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most similar occupied positions (fewer if fewer are occupied), best first, with their scores."""
        if k < 1:
            raise ValueError(f"k={k} must be at least 1")
        scores, positions = torch.topk(self.similarities(query), min(k, len(self)))
        return positions, scores

    def touch(self, position: int) -> BankEntry:
        """Mark an entry as used now (for LRU, and one more visit for LFU) and return it."""
        entry = self.entries[position] if 0 <= position < self.capacity else None
        if entry is None:
            raise ValueError(f"bank position {position} is empty; occupied positions: {self.positions()}")
        entry.last_use = self.tick()
        entry.visits += 1
        return entry

    def positions(self) -> list[int]:
        return self.occupied.nonzero().flatten().tolist()

    def bytes_per_entry(self) -> float:
        """Mean stored bytes of an entry (factors, head, key), as the paper's MB per task."""
        count = len(self)
        return self.nbytes / count if count else 0.0

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries if entry is not None)

    # --- persistence -------------------------------------------------------------------

    def _state(self) -> dict:
        config = {k: getattr(self, k) for k in ("capacity", "key_dim", "energy", "rank", "float16", "retention")}
        entries = [
            None if e is None else {
                "U": e.factors.U, "S": e.factors.S, "Vh": e.factors.Vh, "head_weight": e.head_weight,
                "head_bias": e.head_bias, "key": e.key, "task_label": e.task_label, "created": e.created,
                "last_use": e.last_use, "visits": e.visits,
            }
            for e in self.entries
        ]  # fmt: skip
        return {"config": config, "clock": self.clock, "entries": entries}

    def save(self, path: str | Path) -> None:
        """Write the bank to one file, atomically: a header line, a SHA-256, the payload."""
        buffer = io.BytesIO()
        torch.save(self._state(), buffer)
        payload = buffer.getvalue()
        header = f"{BANK_FORMAT} v{BANK_VERSION}\n{hashlib.sha256(payload).hexdigest()}\n".encode()
        atomic_write(Path(path), lambda temporary: temporary.write_bytes(header + payload))

    @classmethod
    def load(cls, path: str | Path) -> TaskKnowledgeBank:
        """Read a bank written by :meth:`save`; a wrong, truncated or altered file raises BankFileError."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no saved bank at {path}; check the path or save a bank there first") from None
        first, _, rest = raw.partition(b"\n")
        digest, _, payload = rest.partition(b"\n")
        expected = f"{BANK_FORMAT} v{BANK_VERSION}".encode()
        if first != expected:
            version = re.fullmatch(rb"v(\d+)", first.removeprefix(BANK_FORMAT.encode() + b" "))
            if version is not None:
                raise BankFileError(
                    f"{path} is bank format v{version[1].decode()}, this nsr_env reads v{BANK_VERSION}: "
                    "re-create the bank with this version"
                )
            if b"\n" not in raw and expected.startswith(raw):
                raise BankFileError(f"{path} is truncated inside its header; restore it or re-create the bank")
            raise BankFileError(
                f"{path} is not a saved TaskKnowledgeBank (its first line is not {expected.decode()!r})"
            )
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise BankFileError(f"{path} is truncated or altered (SHA-256 mismatch); restore it or re-create the bank")
        try:
            return cls._from_state(torch.load(io.BytesIO(payload), weights_only=True))
        except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise BankFileError(
                f"{path} has a valid checksum but unreadable content ({error}); re-create the bank"
            ) from error

    @classmethod
    def _from_state(cls, state: dict) -> TaskKnowledgeBank:
        bank = cls(**state["config"])
        if len(state["entries"]) != bank.capacity:
            raise ValueError(f"{len(state['entries'])} entries saved for capacity {bank.capacity}")
        bank.clock = state["clock"]
        for position, item in enumerate(state["entries"]):
            if item is None:
                continue
            factors = Factors(item.pop("U"), item.pop("S"), item.pop("Vh"))
            bank.entries[position] = BankEntry(factors, **item)
            bank.keys[position] = torch.nn.functional.normalize(item["key"].float(), dim=0)
            bank.occupied[position] = True
        return bank
