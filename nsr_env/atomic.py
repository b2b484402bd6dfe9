"""Atomic file replacement (write beside the target, then rename over it), and a lock that lets
concurrent processes compute a cached file once."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
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


def remove_orphaned_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that killed writers left under ``folder``; returns them.

    A temporary file belongs to the process whose pid its name carries; only those whose
    process no longer exists are removed, so a live writer is never disturbed.
    """
    removed = []
    for temporary in Path(folder).rglob(".*.tmp"):
        parts = temporary.name.rsplit(".", 3)  # ".<target>", "<pid>", "<uuid hex>", "tmp"
        if len(parts) != 4 or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
        except PermissionError:  # the process exists (another user's): leave its file alone
            continue
    return removed


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock tied to ``path``: ``flock`` on a lock file named by a hash of its absolute
    path, under the system's temporary folder (so that caches hold only their entries). One file per
    path, so locks on two paths never wait for each other and may nest.

    For caches that are slow to compute: a process that misses takes the lock, looks again,
    and computes only if the file is still missing, so sweep workers (or Ray tasks on one
    node) that need the same entry compute it once while the others wait and then read it.
    The operating system releases the lock when its holder dies. Processes on other machines,
    or with another temporary folder, are not serialised; they may compute an entry twice,
    which is harmless, since every entry is written atomically.
    """
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    lock = Path(tempfile.gettempdir()) / f"nsr_env-locks-{os.getuid()}" / f"{digest}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
