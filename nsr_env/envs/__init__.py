"""Environment ids, registered with Gymnasium when ``nsr_env`` is imported.

``gym.make("nsr_env/NSR-v0", cycles=2, slots=1)``: keyword arguments override the
scenario's fields by name (``tasks_per_cycle``, ``cycles``, ``phase_length``, ``slots``,
``rank``, ``bank_capacity``, ...); ``strict``, ``cache``, ``data_root`` and
``render_mode`` go to :class:`NSREnv`.
"""

from gymnasium.envs.registration import register, registry

from nsr_env.envs.nsr import NSREnv

ENV_IDS = {
    "nsr_env/NSR-v0": "default",
    "nsr_env/NSR-Synthetic-v0": "synthetic",
    "nsr_env/NSR-SplitCIFAR100-v0": "split_cifar100",
    "nsr_env/NSR-FiveDatasets-v0": "five_datasets",
}

for env_id, scenario in ENV_IDS.items():
    if env_id not in registry:
        register(id=env_id, entry_point="nsr_env.envs.nsr:NSREnv", kwargs={"scenario": scenario})

__all__ = ["ENV_IDS", "NSREnv"]
