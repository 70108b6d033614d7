"""The offline image classifier: EfficientNet-Lite0 (ImageNet) from its pack, for labels and image features.

It is small (4.7M parameters) and ships as a pack, so the scorer can judge images with no Hub access:
1000-way probabilities for label-based relevance, and 1280-d pooled features for novelty. `to_input`
keeps the path from a generator's pixels to the classifier differentiable, for gradient ascent on a latent.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError
from ..runtime import models

FAMILY = "efficientnet-lite0"
SIZE = 224
FEATURES = 1280
CLASSES = 1000
BN_EPS = 1e-3  # the TensorFlow default the weights were trained with; torch's 1e-5 shifts every logit


class Block(NamedTuple):
    cin: int
    cout: int
    expand: int
    kernel: int
    stride: int


def lite0_blocks() -> list[Block]:
    """The EfficientNet-B0 stage layout, which Lite0 keeps unscaled: 16 inverted-residual blocks."""
    stages = [  # repeats, kernel, stride, expand ratio, output channels
        (1, 3, 1, 1, 16),
        (2, 3, 2, 6, 24),
        (2, 5, 2, 6, 40),
        (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ]
    blocks, cin = [], 32
    for repeats, kernel, stride, expand, cout in stages:
        for i in range(repeats):
            blocks.append(Block(cin, cout, expand, kernel, stride if i == 0 else 1))
            cin = cout
    return blocks


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's 'SAME' padding: for stride 2 the extra pixel goes right and bottom.

    torch's symmetric padding would shift every strided layer by half a pixel relative to training.
    The padding is worked out per input, so any image size works.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 linear projection; ReLU6, no squeeze-excite (Lite)."""

    def __init__(self, block: Block) -> None:
        super().__init__()
        hidden = block.cin * block.expand
        if block.expand != 1:
            self._expand_conv = nn.Conv2d(block.cin, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, block.kernel, block.stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, block.cout, 1, bias=False)
        self._bn2 = _bn(block.cout)
        self.expand = block.expand != 1
        self.skip = block.stride == 1 and block.cin == block.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of `efficientnet_pytorch`, so its state dicts load as they are."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        blocks = lite0_blocks()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConv(b) for b in blocks)
        self._conv_head = nn.Conv2d(blocks[-1].cout, FEATURES, 1, bias=False)
        self._bn1 = _bn(FEATURES)
        self._fc = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[n, 1280] pooled features of inputs already in the classifier's convention (see `to_input`)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features, so a caller needing both runs the network once."""
        return self._fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def load_classifier(path: str | Path | None = None) -> EfficientNetLite0:
    """The classifier in eval mode from a state dict (default: the pack), loaded strictly.

    Its parameters are frozen: it is only ever a judge, and gradient ascent through it needs gradients
    for the input alone, which makes the backward pass several times cheaper.
    """
    path = Path(path) if path is not None else models.pack_path("efficientnet-lite0")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelLoadError(f"cannot read EfficientNet-Lite0 weights from {path}: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (tensors by name).")
    model = EfficientNetLite0()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        summary = " ".join(str(error).split())[:400]
        raise ModelLoadError(
            f"{path} is not an EfficientNet-Lite0 state dict in the efficientnet_pytorch layout "
            f"(_conv_stem, _blocks.N..., _conv_head, _fc with 1000 classes): {summary}"
        ) from None
    return model.eval().requires_grad_(False)


@functools.cache
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in the classifier's output order, from the labels pack."""
    path = models.pack_path("imagenet-labels")
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the ImageNet labels from {path}: {error}") from error
    if not isinstance(labels, list) or len(labels) != CLASSES:
        raise ModelLoadError(f"{path} should be a JSON list of {CLASSES} class names.")
    return [str(label) for label in labels]


def preprocess(images: Sequence) -> torch.Tensor:
    """PIL images -> [n, 3, 224, 224]: shorter side resized to 224, centre-cropped, scaled (x*255-127)/128.

    Cropping rather than squashing keeps shapes undistorted, as in ImageNet evaluation.
    """
    from PIL import Image

    arrays = []
    for image in images:
        image = image.convert("RGB")
        scale = SIZE / min(image.size)
        w, h = max(SIZE, round(image.width * scale)), max(SIZE, round(image.height * scale))
        image = image.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - SIZE) // 2, (h - SIZE) // 2
        arrays.append(np.asarray(image.crop((left, top, left + SIZE, top + SIZE)), dtype=np.float32))
    if not arrays:
        return torch.zeros(0, 3, SIZE, SIZE)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (batch - 127.0) / 128.0


def to_input(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] ([n, 3, H, W], any size, e.g. a GAN's output) -> the classifier's input, differentiably.

    Plain resize (no crop): a generated image is its whole frame. Antialiasing matters when shrinking.
    """
    x = F.interpolate(x.float(), size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return ((x + 1) * 127.5 - 127.0) / 128.0


class ImageClassifier:
    """ImageNet probabilities and L2-normalised features for PIL images, via the shared device manager."""

    def __init__(self, manager, path: str | Path | None = None, batch_size: int = 64) -> None:
        self.manager = manager
        self.path = Path(path) if path is not None else models.pack_path("efficientnet-lite0")
        self.reference = str(path) if path is not None else "pack:efficientnet-lite0"  # its cache key, as reported
        self.batch_size = batch_size

    def predict(self, images: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(probs [n, 1000], features [n, 1280] with unit rows) for `images`."""
        images = list(images)
        if not images:
            return np.zeros((0, CLASSES), np.float32), np.zeros((0, FEATURES), np.float32)
        # float32 whatever the manager's dtype: the model is tiny and half precision would move the scores
        key = self.manager.key(FAMILY, self.reference, torch.float32)
        with self.manager.use(key, lambda: load_classifier(self.path)) as net:
            rows = self.manager.run_batched(lambda chunk: self._run(net, chunk), images, self.batch_size)
        probs, feats = zip(*rows, strict=True)
        return np.stack(probs), np.stack(feats)

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet probabilities of images given as a tensor in [-1, 1], differentiable (GAN latent ascent)."""
        key = self.manager.key(FAMILY, self.reference, torch.float32)
        with self.manager.use(key, lambda: load_classifier(self.path)) as net:
            return net(to_input(pixels.to(self.manager.device, torch.float32))).softmax(dim=-1)

    @torch.inference_mode()
    def _run(self, net: EfficientNetLite0, images: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
        x = preprocess(images).to(self.manager.device)
        features = net.features(x)
        probs = net.classify(features).softmax(dim=-1)
        features = F.normalize(features, dim=-1)
        return list(zip(probs.cpu().numpy(), features.cpu().numpy(), strict=True))

    @staticmethod
    def top_labels(probs_row: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k most probable class names with their probabilities, best first."""
        labels = imagenet_labels()
        best = np.argsort(np.asarray(probs_row))[::-1][:k]
        return [(labels[i], float(probs_row[i])) for i in best]
