"""A frozen image model, split around the one linear layer that adapters modify.

    images --transform--> x --encode--> inputs (N, P, in) --W0, b0 (+ LoRA)--> (N, P, out) --pool--> (N, D)

``encode`` is everything below the adapted layer and ``pool`` the frozen rest above it
(activation and average over the P spatial positions). Both ``inputs`` and the base
outputs ``inputs @ W0.T + b0`` depend only on frozen weights, so the feature cache stores
them once and training only computes the low-rank path. Each backbone adapts exactly one
layer: with two adapted layers in sequence, the second one's inputs would depend on the
first one's adapter and could no longer be cached.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


def relu6_mean(z: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return torch.nn.functional.relu6(z, inplace=inplace).mean(dim=1)


def relu_mean(z: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return torch.nn.functional.relu(z, inplace=inplace).mean(dim=1)


def single_position(z: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return z.squeeze(1)


POOLS = {"relu6_mean": relu6_mean, "relu_mean": relu_mean, "identity": single_position}
"""The frozen maps from adapted-layer outputs (N, P, out) to head features (N, D), by name
(module-level functions, so that learners and environments pickle). ``inplace=True`` may
overwrite ``z``: only for a tensor the caller has just computed."""


def _relu6_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.hardtanh_backward(grad, output, 0.0, 6.0)


def _relu_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.threshold_backward(grad, output, 0.0)


def _identity_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return grad.expand_as(output)


POOL_BACKWARDS = {"relu6_mean": _relu6_backward, "relu_mean": _relu_backward, "identity": _identity_backward}
"""Each pool is an elementwise nonlinearity, then a mean over positions. Its nonlinearity's backward (torch's own
kernel), from the gradient (broadcastable) and the nonlinearity's output: for a hand-written backward."""


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageTransform:
    """The one preprocessing step of every backbone.

    uint8 images (N, H, W) grayscale or (N, H, W, 3) RGB -> float (N, 3, size, size):
    grayscale channels are repeated to RGB, values scaled to [0, 1], images resized
    bilinearly to ``size`` x ``size`` and normalised with ImageNet's mean and std.
    """

    size: int = 64
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        # a copy: inputs may be read-only (loaded datasets are), which torch.from_numpy warns about
        x = torch.from_numpy(np.array(images, dtype=np.float32)) / 255.0
        if x.ndim == 3:
            x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        elif x.ndim == 4 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        else:
            raise ValueError(f"images must be (N, H, W) or (N, H, W, 3) uint8, got shape {tuple(x.shape)}")
        if x.shape[-2:] != (self.size, self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def key(self) -> dict:
        return {"kind": "gray-to-rgb,resize-bilinear,imagenet-normalise", **asdict(self)}


class Backbone(nn.Module, ABC):
    """Base class: a frozen model with one adapted linear layer (``weight`` W0, ``bias`` b0)."""

    name: str
    adapted_layer: str  # the layer's name inside the original model, for the docs and the cache key
    pool_kind: str  # a key of POOLS: what follows the adapted layer

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, transform: ImageTransform) -> None:
        super().__init__()
        self.transform = transform
        self.register_buffer("weight", weight.detach().clone().float())
        self.register_buffer("bias", bias.detach().clone().float())
        self._fingerprint: str | None = None

    def freeze(self) -> Backbone:
        """Put every parameter out of reach of optimisers and batch norm in eval mode."""
        self.requires_grad_(False)
        self.eval()
        return self

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Transformed images (N, 3, H, W) -> the adapted layer's inputs (N, P, in_features)."""

    def pool(self, z: torch.Tensor) -> torch.Tensor:
        """The adapted layer's outputs (N, P, out_features) -> features (N, D) for the task heads."""
        return POOLS[self.pool_kind](z)

    def base_output(self, inputs: torch.Tensor) -> torch.Tensor:
        """The frozen adapted layer: ``inputs @ W0.T + b0``."""
        return inputs @ self.weight.T + self.bias

    def features(self, images: np.ndarray) -> torch.Tensor:
        """The whole frozen path, from uint8 images to head features, without any adapter."""
        with torch.inference_mode():
            return self.pool(self.base_output(self.encode(self.transform(images))))

    def fingerprint(self) -> str:
        """A hash of the name, the adapted layer and every weight: part of the feature-cache key."""
        if self._fingerprint is None:
            digest = hashlib.sha256(f"{self.name}:{self.adapted_layer}".encode())
            for key, tensor in sorted(self.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint
