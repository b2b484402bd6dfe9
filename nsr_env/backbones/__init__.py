"""Frozen backbones by name. A new backbone is one module plus one line in ``BACKBONES``."""

from __future__ import annotations

from nsr_env.backbones.base import IMAGENET_MEAN, IMAGENET_STD, POOLS, Backbone, ImageTransform
from nsr_env.backbones.efficientnet_lite import EfficientNetLite0
from nsr_env.backbones.resnet import BackboneWeightsError, ResNet18
from nsr_env.backbones.tiny_cnn import TinyCNN

BACKBONES: dict[str, type[Backbone]] = {
    EfficientNetLite0.name: EfficientNetLite0,
    ResNet18.name: ResNet18,
    TinyCNN.name: TinyCNN,
}
DEFAULT_BACKBONE = EfficientNetLite0.name


def make_backbone(name: str = DEFAULT_BACKBONE, **kwargs) -> Backbone:
    """Build a frozen backbone by name (``efficientnet_lite0``, ``resnet18``, ``tiny_cnn``)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is unknown; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "POOLS",
    "Backbone",
    "BackboneWeightsError",
    "EfficientNetLite0",
    "ImageTransform",
    "ResNet18",
    "TinyCNN",
    "make_backbone",
]
