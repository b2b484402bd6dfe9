"""nsr-env: continual learning with LoRA adapters as memory, as a Gymnasium environment.

Importing the package registers one environment id per named scenario (``nsr_env/NSR-v0``
for ``default``; see :mod:`nsr_env.scenarios`). The import needs no torch: the registries
name their torch-backed members by import path.
"""

from nsr_env import envs  # noqa: F401  (registration on import)

__version__ = "0.1.0"
