"""The EfficientNet-Lite0 classifier: the real pack loads strictly and behaves like a classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aigc.errors import ModelLoadError
from aigc.runtime.devices import DeviceManager
from aigc.scoring.vision import (
    EfficientNetLite0,
    ImageClassifier,
    imagenet_labels,
    load_classifier,
    preprocess,
    to_input,
)

pytestmark = pytest.mark.pack


def grey() -> Image.Image:
    return Image.new("RGB", (300, 200), (128, 128, 128))


def checkerboard() -> Image.Image:
    cells = (np.indices((240, 240)) // 20).sum(axis=0) % 2
    return Image.fromarray((cells * 255).astype(np.uint8)).convert("RGB")


def orange_disc() -> Image.Image:
    yy, xx = np.mgrid[:224, :224]
    inside = (yy - 112) ** 2 + (xx - 112) ** 2 < 80**2
    pixels = np.where(inside[..., None], [255, 140, 0], [30, 90, 200]).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def net() -> EfficientNetLite0:
    return load_classifier()


@pytest.fixture(scope="module")
def classifier() -> ImageClassifier:
    return ImageClassifier(DeviceManager("cpu"))


@pytest.fixture(scope="module")
def predictions(classifier):
    return classifier.predict([grey(), checkerboard(), orange_disc()])


def test_the_pack_loads_strictly_into_our_module(net):
    assert isinstance(net, EfficientNetLite0) and not net.training
    assert not any(p.requires_grad for p in net.parameters())  # a frozen judge
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    assert len(imagenet_labels()) == 1000 and imagenet_labels()[967] == "espresso"


def test_shapes_probabilities_and_unit_features(predictions):
    probs, features = predictions
    assert probs.shape == (3, 1000) and features.shape == (3, 1280)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert preprocess([grey()]).shape == (1, 3, 224, 224)


def test_different_images_get_different_confident_predictions(classifier, predictions):
    probs, features = predictions
    assert np.abs(probs[0] - probs[1]).sum() > 0.5  # flat grey vs a high-contrast pattern
    assert float(features[0] @ features[1]) < 0.95
    assert probs[2].max() > 20 / 1000  # far from uniform: the weights carry real structure
    top = classifier.top_labels(probs[2], k=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


def test_real_weights_differ_from_random_ones(net):
    torch.manual_seed(0)
    x = preprocess([orange_disc()])[..., ::4, ::4]  # any size runs (SAME padding); small keeps it fast
    with torch.no_grad():
        trained, random = net(x), EfficientNetLite0().eval()(x)
    assert not torch.allclose(trained, random, atol=1e-2)


def test_an_image_scores_the_same_alone_and_in_a_batch(classifier, predictions):
    probs, features = predictions
    alone_probs, alone_features = classifier.predict([checkerboard()])
    np.testing.assert_allclose(alone_probs[0], probs[1], atol=1e-5)
    np.testing.assert_allclose(alone_features[0], features[1], atol=1e-5)


def test_to_input_is_differentiable_from_any_size(net):
    images = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    x = to_input(images)
    assert x.shape == (1, 3, 224, 224)
    net(x)[:, 967].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_to_input_matches_the_pixel_convention():
    white, black = torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)
    assert torch.allclose(to_input(white), torch.full((1, 3, 224, 224), 128 / 128))
    assert torch.allclose(to_input(black), torch.full((1, 3, 224, 224), -127 / 128))


def test_a_wrong_state_dict_is_a_clear_load_error(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"_fc.weight": torch.zeros(10, 1280)}, wrong)
    with pytest.raises(ModelLoadError, match="not an EfficientNet-Lite0 state dict"):
        load_classifier(wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_classifier(garbage)
