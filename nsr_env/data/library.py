"""The offline task library: two-class tasks on real images that need no download.

Five libraries, each a fixed list (a scenario takes its first ``tasks_per_cycle`` tasks):

- ``pairs``: the 45 class pairs (a, b), a < b, of Fashion-MNIST, shuffled once by
  ``default_rng([PAIR_ORDER_SEED, 45])``: a fixed order, so a scenario's ``data_seed`` draws other
  images of the same tasks (as the similarity rule's threshold calibration needs). Tasks that
  share a class are related.
- ``rotated``: the 5 disjoint pairs (0,1), (2,3), (4,5), (6,7), (8,9) rotated by 0, 30, ..., 330
  degrees, angle-major (the 5 pairs at 0 degrees, then at 30, ...): 60 tasks. A pair's tasks form
  one family; neighbouring angles are the closest relatives.
- ``traps``: the 5 disjoint pairs, then their twins: the same images with the labels swapped.
  10 tasks; a twin is not a relative of its original (reusing its adapter is harmful), though
  an input-based key cannot tell them apart.
- ``mixed``: 8 tasks of 4 kinds, interleaved as in 5-Datasets: Fashion-MNIST (0,1), digits (0,1),
  Fashion-MNIST rotated 90 degrees (4,5), Fashion-MNIST inverted (8,9), then Fashion-MNIST (2,3),
  digits (2,3), rotated (6,7), inverted (5,7). The six Fashion-MNIST pairs are distinct.
- ``long``: all 45 pairs (in the ``pairs`` order) at the 12 angles, angle-major: 540 tasks, for
  Zipf streams over hundreds of tasks. Families as in ``rotated``.

Every task's per-class subsets are drawn by :func:`nsr_env.data.tasks.class_split` (so a class
has the same training, held-out and probe images in every task that uses it, at every angle);
``digits`` holds about 180 images per class, so its subsets are capped by :data:`SUBSET_CAPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from nsr_env.data.tasks import Task, class_split

CLASS_PAIRS = tuple(combinations(range(10), 2))
DISJOINT_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
ANGLES = tuple(range(0, 360, 30))
PAIR_ORDER_SEED = 0
"""The pairs' order never depends on a scenario's ``data_seed``, which draws images only."""
SUBSET_CAPS = {"digits": (100, 30, 30)}
"""Per-class (train, eval, probe) caps of small datasets: digits has 140-147 training-split and
34-36 test-split images per class (see :func:`nsr_env.data.variants.digits_split`)."""


@dataclass(frozen=True)
class LibraryTask:
    """A two-class task of the library: ``classes`` are the original labels of local classes 0 and 1."""

    name: str
    dataset: str  # a name for load_dataset, derived variants included
    classes: tuple[int, int]
    family: str  # tasks of one family are versions of each other


def pair_name(base: str, pair: tuple[int, int]) -> str:
    return f"{base}({pair[0]},{pair[1]})"


def rotated_dataset(base: str, degrees: int) -> str:
    """The dataset ``base`` rotated by ``degrees``: ``base`` itself at 0, so unrotated tasks share cache entries."""
    return f"{base}@rot{degrees}" if degrees else base


def pair_order(seed: int = PAIR_ORDER_SEED) -> list[tuple[int, int]]:
    """The 45 Fashion-MNIST class pairs in the shuffle of ``seed`` (the libraries use :data:`PAIR_ORDER_SEED`)."""
    order = np.random.default_rng([seed, len(CLASS_PAIRS)]).permutation(len(CLASS_PAIRS))
    return [CLASS_PAIRS[i] for i in order]


def _plain(base: str, pair: tuple[int, int], variant: str = "") -> LibraryTask:
    name = pair_name(base, pair) + (f"@{variant}" if variant else "")
    return LibraryTask(name, f"{base}@{variant}" if variant else base, pair, name)


def _rotated(pairs: list[tuple[int, int]]) -> list[LibraryTask]:
    return [
        LibraryTask(
            f"{pair_name('fashion_mnist', pair)}@rot{degrees}",
            rotated_dataset("fashion_mnist", degrees),
            pair,
            pair_name("fashion_mnist", pair),
        )
        for degrees in ANGLES
        for pair in pairs
    ]


def pairs_library() -> list[LibraryTask]:
    return [_plain("fashion_mnist", pair) for pair in pair_order()]


def rotated_library() -> list[LibraryTask]:
    return _rotated(list(DISJOINT_PAIRS))


def traps_library() -> list[LibraryTask]:
    originals = [_plain("fashion_mnist", pair) for pair in DISJOINT_PAIRS]
    twins = [LibraryTask(f"{t.name}/swapped", t.dataset, t.classes[::-1], f"{t.name}/swapped") for t in originals]
    return originals + twins


def mixed_library() -> list[LibraryTask]:
    kinds = (
        ("fashion_mnist", "", ((0, 1), (2, 3))),
        ("digits", "", ((0, 1), (2, 3))),
        ("fashion_mnist", "rot90", ((4, 5), (6, 7))),
        ("fashion_mnist", "invert", ((8, 9), (5, 7))),
    )
    return [_plain(base, pairs[round_], variant) for round_ in range(2) for base, variant, pairs in kinds]


def long_library() -> list[LibraryTask]:
    return _rotated(pair_order())


LIBRARIES: dict[str, Callable[[], list[LibraryTask]]] = {
    "pairs": pairs_library,
    "rotated": rotated_library,
    "traps": traps_library,
    "mixed": mixed_library,
    "long": long_library,
}
"""Each library by name, as a function that lists its tasks."""


def class_subsets(
    dataset: str,
    classes: list[int],
    train_per_class: int,
    eval_per_class: int,
    probe_per_class: int,
    seed: int,
    root: str | Path | None = None,
) -> dict[int, Task]:
    """One single-class :class:`Task` per class of ``dataset``: its training, held-out and probe subsets,
    as :func:`class_split` draws them, capped per class by :data:`SUBSET_CAPS` for small datasets."""
    base = dataset.partition("@")[0]
    caps = SUBSET_CAPS.get(base, (train_per_class, eval_per_class, probe_per_class))
    tasks = class_split(
        dataset,
        [[cls] for cls in classes],
        train_per_class=min(train_per_class, caps[0]),
        eval_per_class=min(eval_per_class, caps[1]),
        seed=seed,
        root=root,
        probe_per_class=min(probe_per_class, caps[2]),
    )
    return {task.classes[0]: task for task in tasks}
