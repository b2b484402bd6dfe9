"""nsr-env: continual learning with LoRA adapters as memory, as a Gymnasium environment.

Importing the package registers the environment ids (``nsr_env/NSR-v0`` and one per named
scenario; see :mod:`nsr_env.envs`).
"""

from nsr_env import envs  # noqa: F401  (registration on import)

__version__ = "0.1.0"
