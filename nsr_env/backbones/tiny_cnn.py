"""A small randomly initialised CNN, for tests only: fast, and no weights to load."""

from __future__ import annotations

import torch
from torch import nn

from nsr_env.backbones.base import Backbone, ImageTransform


class TinyCNN(Backbone):
    """Two strided 3x3 convolutions, then a 1x1 adapted layer (16 -> 32), ReLU, average.

    Weights come from ``seed``; 16x16 inputs give a 4x4 map, P = 16 positions. Its features
    mean nothing: it exists to make cache and shape tests fast.
    """

    name = "tiny_cnn"
    adapted_layer = "conv1x1"
    pool_kind = "relu_mean"

    def __init__(self, image_size: int = 16, seed: int = 0, width: int = 16, out_features: int = 32) -> None:
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(out_features, width, generator=generator) / width**0.5
        super().__init__(weight, torch.zeros(out_features), ImageTransform(size=image_size))
        self.convs = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, width, 3, stride=2, padding=1), nn.ReLU()
        )
        with torch.no_grad():
            for parameter in self.convs.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        self.freeze()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x).flatten(2).transpose(1, 2)
