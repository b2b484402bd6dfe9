"""Where nsr_env keeps what it computes: ``NSR_CACHE`` or ``~/.cache/nsr_env``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache root: ``override`` if given, else ``$NSR_CACHE``, else ``~/.cache/nsr_env``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("NSR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nsr_env"
