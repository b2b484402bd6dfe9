"""Protection rules: how training on a shared slot protects its earlier users (scenario field ``protect``).

Each member is one file with a :class:`nsr_env.protection.base.Protection` subclass, listed
here by one ``register_protection`` line (an import path, so the registry imports no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nsr_env.registry import Registry

if TYPE_CHECKING:
    from nsr_env.config import LearnerConfig
    from nsr_env.protection.base import Protection

PROTECTIONS = Registry("protect")


def register_protection(name: str, entry: type[Protection] | str) -> None:
    """Make a protection rule available as scenario field ``protect=name`` (a duplicate name raises)."""
    PROTECTIONS.register(name, entry)


def make_protection(config: LearnerConfig) -> Protection:
    """The protection rule named by ``config.protect``."""
    return PROTECTIONS.get(config.protect)(config)


register_protection("distill", "nsr_env.protection.distill:Distillation")
register_protection("none", "nsr_env.protection.none:NoProtection")
register_protection("eblora", "nsr_env.protection.eblora:EnergyBalancedProjection")

__all__ = ["PROTECTIONS", "make_protection", "register_protection"]
