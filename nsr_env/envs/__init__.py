"""Environment ids: one per registered scenario, registered with Gymnasium by ``register_scenario``.

``gym.make("nsr_env/NSR-v0", cycles=2, slots=1)``: keyword arguments override the
scenario's fields by name (``tasks_per_cycle``, ``cycles``, ``phase_length``, ``slots``,
``rank``, ``bank_capacity``, ``memory``, ``protect``, ...); ``strict``, ``cache``,
``data_root`` and ``render_mode`` go to :class:`nsr_env.envs.nsr.NSREnv`.
"""

from nsr_env.scenarios import ENV_IDS, env_id_of

__all__ = ["ENV_IDS", "NSREnv", "env_id_of"]


def __getattr__(name: str):
    if name == "NSREnv":  # torch: imported when first asked for, so registering the ids needs no torch
        from nsr_env.envs.nsr import NSREnv

        return NSREnv
    raise AttributeError(f"module 'nsr_env.envs' has no attribute {name!r}")
