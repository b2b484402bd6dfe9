"""Atomic file replacement: write beside the target, then rename over it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)``, then rename the result onto ``path``.

    The temporary file sits in the same folder (so the rename is atomic on POSIX) and is
    hidden; if anything fails or the process dies, ``path`` keeps its previous content. Its
    name is unique per call (pid and a random uuid), so concurrent writers in other threads
    or processes never share one temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
