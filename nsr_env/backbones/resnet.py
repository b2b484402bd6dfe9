"""torchvision ResNet-18 with ImageNet weights: needs the weights file (internet or TORCH_HOME)."""

from __future__ import annotations

import torch
from torch import nn

from nsr_env.backbones.base import Backbone, ImageTransform


class BackboneWeightsError(RuntimeError):
    """Pretrained weights are neither on disk nor downloadable."""


class ResNet18(Backbone):
    """Adapted layer: the final fully connected layer (512 -> 1000); P = 1 position.

    ResNet-18 has no 1x1 convolution near its top, so the adapter sits on ``fc`` and the
    task heads read its 1000 outputs (``pool`` is the identity).
    """

    name = "resnet18"
    adapted_layer = "fc"
    pool_kind = "identity"

    def __init__(self, image_size: int = 64) -> None:
        import torchvision

        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        try:
            model = torchvision.models.resnet18(weights=weights)
        except Exception as error:  # urllib / ssl / socket errors from the hub download
            raise BackboneWeightsError(
                f"ResNet-18 ImageNet weights are not cached and could not be downloaded "
                f"({type(error).__name__}: {error}). Put {weights.url.rsplit('/', 1)[-1]} under "
                "$TORCH_HOME/hub/checkpoints, or use the offline default backbone 'efficientnet_lite0'."
            ) from None
        model.eval()
        super().__init__(model.fc.weight, model.fc.bias, ImageTransform(size=image_size))
        self.trunk = nn.Sequential(*list(model.children())[:-1])  # everything up to and with avgpool
        self.freeze()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).flatten(1).unsqueeze(1)
