import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from skimage import data as skimage_data
from torchvision.models import ResNet18_Weights

from nsr_env.backbones import BackboneWeightsError, EfficientNetLite0, ImageTransform, make_backbone
from nsr_env.backbones.efficientnet_lite import _load_pretrained

IMAGENET_CATEGORIES = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # shipped in torchvision's code


def test_transform_turns_grayscale_into_normalised_rgb():
    images = np.full((2, 28, 28), 255, np.uint8)
    x = ImageTransform(size=32)(images)
    assert x.shape == (2, 3, 32, 32)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 5, 5], expected)


def test_transform_takes_rgb_channels_last():
    images = np.zeros((1, 10, 10, 3), np.uint8)
    images[..., 0] = 255
    x = ImageTransform(size=10)(images)
    assert x.shape == (1, 3, 10, 10)
    assert x[0, 0].mean() > x[0, 1].mean()


READ_ONLY_TRANSFORM = textwrap.dedent(
    """
    import warnings
    import numpy as np
    from nsr_env.backbones import ImageTransform

    images = np.full((2, 28, 28), 7, np.uint8)
    images.flags.writeable = False  # as load_dataset returns them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = ImageTransform(size=28)(images)
    assert x.shape == (2, 3, 28, 28), x.shape
    """
)


def test_transform_takes_read_only_arrays_without_a_warning():
    # In a fresh process: torch warns about a non-writable array only once per process.
    result = subprocess.run([sys.executable, "-c", READ_ONLY_TRANSFORM], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_transform_rejects_other_shapes():
    with pytest.raises(ValueError, match="got shape"):
        ImageTransform()(np.zeros((2, 4, 5, 6), np.uint8))


def test_tiny_cnn_shapes_and_split_consistency():
    backbone = make_backbone("tiny_cnn")
    x = backbone.transform(np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype=np.uint8))
    inputs = backbone.encode(x)
    assert inputs.shape == (3, 16, backbone.in_features)
    torch.testing.assert_close(backbone.base_output(inputs), inputs @ backbone.weight.T + backbone.bias)
    assert backbone.pool(backbone.base_output(inputs)).shape == (3, backbone.out_features)


def test_backbones_are_frozen():
    backbone = make_backbone("tiny_cnn")
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not backbone.training


def test_fingerprint_follows_the_weights():
    assert make_backbone("tiny_cnn", seed=0).fingerprint() == make_backbone("tiny_cnn", seed=0).fingerprint()
    assert make_backbone("tiny_cnn", seed=0).fingerprint() != make_backbone("tiny_cnn", seed=1).fingerprint()


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="backbone='vit'"):
        make_backbone("vit")


@pytest.fixture(scope="module")
def lite224():
    return EfficientNetLite0(image_size=224)


def test_efficientnet_lite0_ranks_the_cat_first_on_a_real_photo(lite224):
    photo = skimage_data.chelsea()  # a real photograph of a tabby cat, shipped with scikit-image
    with torch.inference_mode():
        logits = lite224.imagenet_logits(lite224.transform(photo[None]))
    top = IMAGENET_CATEGORIES[int(logits.argmax())]
    assert top in {"tabby", "tiger cat", "Egyptian cat"}, top
    assert logits.softmax(-1).max() > 0.5


def test_folded_split_model_equals_the_original_network(lite224):
    images = np.stack([skimage_data.chelsea()[:224, :224], skimage_data.coffee()[:224, :224]])
    x = lite224.transform(images)
    with torch.inference_mode():
        torch.testing.assert_close(lite224.imagenet_logits(x), _load_pretrained().eval()(x), atol=1e-4, rtol=1e-4)


def test_efficientnet_default_declares_its_adapted_layer():
    backbone = make_backbone()
    assert (backbone.in_features, backbone.out_features) == (320, 1280)
    assert backbone.transform.size == 64
    assert backbone.encode(backbone.transform(np.zeros((1, 28, 28), np.uint8))).shape == (1, 4, 320)


def test_resnet18_without_weights_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    try:
        backbone = make_backbone("resnet18")
    except BackboneWeightsError as error:
        assert "TORCH_HOME" in str(error) and "efficientnet_lite0" in str(error)
    else:  # online: the real weights arrived
        assert (backbone.in_features, backbone.out_features) == (512, 1000)
