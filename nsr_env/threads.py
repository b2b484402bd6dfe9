"""Running torch on one thread: what the sweep's cells and PPO training do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["one_torch_thread"]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block, the previous count restored after it.

    The work here is many small operations (a rank-4 update, a 64-unit policy), where more
    threads add synchronisation and, beside other busy processes, oversubscribe the cores: PPO
    training on two threads beside a two-process sweep ran six times slower than on one.
    One thread also makes results independent of how many processes run at once.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
