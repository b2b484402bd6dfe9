"""One file per saved memory: a header line naming its format and version, a SHA-256, a torch payload.

Shared by every memory mechanism, so each refuses a wrong, truncated or altered file the same way.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from nsr_env.atomic import atomic_write

T = TypeVar("T")


class MemoryFileError(ValueError):
    """A saved memory cannot be read: wrong format or version, truncated, or altered."""


def save_state(path: str | Path, file_format: str, version: int, state: dict) -> None:
    """Write ``state`` (tensors and plain values) to ``path`` atomically, under the header ``file_format vN``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = f"{file_format} v{version}\n{hashlib.sha256(payload).hexdigest()}\n".encode()
    atomic_write(Path(path), lambda temporary: temporary.write_bytes(header + payload))


def load_state(path: str | Path, file_format: str, version: int, noun: str, build: Callable[[dict], T]) -> T:
    """``build`` applied to the state saved at ``path`` by :func:`save_state`; one MemoryFileError naming the
    file for a wrong format or version, a truncated or altered file, or content ``build`` cannot use."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved {noun} at {path}; check the path or save a {noun} there first") from None
    first, _, rest = raw.partition(b"\n")
    digest, _, payload = rest.partition(b"\n")
    expected = f"{file_format} v{version}".encode()
    if first != expected:
        found = re.fullmatch(rb"v(\d+)", first.removeprefix(file_format.encode() + b" "))
        if found is not None:
            raise MemoryFileError(
                f"{path} is {noun} format v{found[1].decode()}, this nsr_env reads v{version}: "
                f"re-create the {noun} with this version"
            )
        if b"\n" not in raw and expected.startswith(raw):
            raise MemoryFileError(f"{path} is truncated inside its header; restore it or re-create the {noun}")
        title = file_format.removeprefix("nsr-env ")
        raise MemoryFileError(f"{path} is not a saved {title} (its first line is not {expected.decode()!r})")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise MemoryFileError(f"{path} is truncated or altered (SHA-256 mismatch); restore it or re-create the {noun}")
    try:
        return build(torch.load(io.BytesIO(payload), weights_only=True))
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise MemoryFileError(
            f"{path} has a valid checksum but unreadable content ({error}); re-create the {noun}"
        ) from error
