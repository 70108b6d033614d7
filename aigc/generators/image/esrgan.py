"""The ESRGAN family of upscalers, read from the files people download: RRDBNet (Real-ESRGAN/BasicSR keys, or the
original ESRGAN's `model.N` keys) and SRVGGNetCompact. The layout, scale, widths and block counts are read from the
tensors' names and shapes, so a file is recognised (or refused) from its header before any weight is read.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import ModelLoadError

RRDB = "RRDBNet"  # Real-ESRGAN / BasicSR naming: conv_first, body.N.rdb1.conv1 ... conv_last
OLD_RRDB = "ESRGAN"  # the original ESRGAN naming: model.0, model.1.sub.N.RDB1.conv1.0 ...
COMPACT = "SRVGGNetCompact"  # Real-ESRGAN's compact models (realesr-general-x4v3, realesr-animevideov3)
LAYOUTS = (
    f"{RRDB} (Real-ESRGAN/BasicSR keys: conv_first, body.N.rdb1.conv1 ...; x1/x2/x4/x8)",
    f"{OLD_RRDB} (original keys: model.0, model.1.sub.N.RDB1.conv1.0 ...)",
    f"{COMPACT} (Real-ESRGAN compact: body.N convolutions with PReLU)",
)
TORCH_FILES = (".pth", ".pt", ".ckpt")
FILES = (*TORCH_FILES, ".safetensors")
_NESTED = ("params_ema", "params", "state_dict")  # where BasicSR and trainers keep the weights, best first
_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_CONV = re.compile(r"^model\.(\d+)\.(weight|bias)$")


class LayoutError(ValueError):
    """A weights file that is none of the layouts aigc reads, or one of them in a variant aigc does not run."""


@dataclass(frozen=True)
class Layout:
    """What a weights file holds: enough to build its network."""

    name: str  # RRDB, OLD_RRDB or COMPACT
    scale: int  # the model's own factor
    features: int
    blocks: int  # RRDB blocks, or the compact model's body convolutions
    growth: int = 0  # RRDB only: the channels each dense-block convolution adds
    upsamples: int = 0  # RRDB only: nearest x2 + convolution stages
    unshuffle: int = 1  # RRDB only: pixel-unshuffle factor of the input (Real-ESRGAN's x2 and x1 models)


# --- the networks ----------------------------------------------------------------------------------------------


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class DenseBlock(nn.Module):
    """Five convolutions, each seeing every earlier output; the result is scaled by 0.2 onto the input."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.conv1 = _conv(features, growth)
        self.conv2 = _conv(features + growth, growth)
        self.conv3 = _conv(features + 2 * growth, growth)
        self.conv4 = _conv(features + 3 * growth, growth)
        self.conv5 = _conv(features + 4 * growth, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), 0.2))
        return self.conv5(torch.cat(seen, 1)) * 0.2 + x


class RRDBlock(nn.Module):
    """Three dense blocks with a residual around them (residual in residual)."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (DenseBlock(features, growth) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator; Real-ESRGAN's x2/x1 models first pixel-unshuffle the input (2 or 4)."""

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        width, growth = layout.features, layout.growth
        self.unshuffle, self.upsamples = layout.unshuffle, layout.upsamples
        self.conv_first = _conv(3 * layout.unshuffle**2, width)
        self.body = nn.Sequential(*(RRDBlock(width, growth) for _ in range(layout.blocks)))
        self.conv_body = _conv(width, width)
        for i in range(layout.upsamples):
            setattr(self, f"conv_up{i + 1}", _conv(width, width))
        self.conv_hr = _conv(width, width)
        self.conv_last = _conv(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.upsamples):
            up = getattr(self, f"conv_up{i + 1}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """Convolutions and PReLUs at the input's size, a pixel shuffle, plus the nearest-upsampled input."""

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        width, self.scale = layout.features, layout.scale
        layers: list[nn.Module] = [_conv(3, width), nn.PReLU(width)]
        for _ in range(layout.blocks):
            layers += [_conv(width, width), nn.PReLU(width)]
        layers.append(_conv(width, 3 * self.scale**2))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.scale)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class Upscaler(nn.Module):
    """A loaded network with what it is: the cached value the device manager holds and moves."""

    def __init__(self, net: nn.Module, layout: Layout) -> None:
        super().__init__()
        self.net, self.layout = net, layout

    @property
    def align(self) -> int:
        """Input sides must be multiples of this (the pixel-unshuffle factor)."""
        return self.layout.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --- reading the layout from names and shapes --------------------------------------------------------------------


def detect(shapes: Mapping[str, Sequence[int]]) -> Layout:
    """The layout of a state dict (tensor name -> shape, already unwrapped); LayoutError when it is none of them."""
    if "conv_first.weight" in shapes and "body.0.rdb1.conv1.weight" in shapes:
        return _rrdb(shapes, RRDB)
    if "model.0.weight" in shapes and "model.1.sub.0.RDB1.conv1.0.weight" in shapes:
        return _rrdb(_from_old_names(shapes), OLD_RRDB)
    if len(shapes.get("body.0.weight", ())) == 4 and len(shapes.get("body.1.weight", ())) == 1:
        return _compact(shapes)
    raise LayoutError(f"it holds none of the upscaler layouts aigc reads: {'; '.join(LAYOUTS)}")


def _rrdb(shapes: Mapping[str, Sequence[int]], name: str) -> Layout:
    features, in_channels = shapes["conv_first.weight"][0], shapes["conv_first.weight"][1]
    unshuffle = {3: 1, 12: 2, 48: 4}.get(in_channels)
    if unshuffle is None or shapes.get("conv_last.weight", [0])[0] != 3:
        raise LayoutError(f"this {name} takes {in_channels} input channels or gives other than 3; aigc runs RGB models")
    blocks = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("body."))
    upsamples = sum(1 for k in shapes if re.fullmatch(r"conv_up\d+\.weight", k))
    scale = 2**upsamples // unshuffle
    if not 1 <= scale <= 8:
        raise LayoutError(
            f"this {name} has {upsamples} upsampling stages with a x{unshuffle} unshuffle; aigc runs x1-x8"
        )
    growth = shapes["body.0.rdb1.conv1.weight"][0]
    return Layout(name, scale, features, blocks, growth=growth, upsamples=upsamples, unshuffle=unshuffle)


def _compact(shapes: Mapping[str, Sequence[int]]) -> Layout:
    convs = sorted(int(k.split(".")[1]) for k, s in shapes.items() if k.startswith("body.") and len(s) == 4)
    features, last = shapes["body.0.weight"][0], shapes[f"body.{convs[-1]}.weight"][0]
    scale = round((last / 3) ** 0.5)
    if 3 * scale**2 != last or convs != list(range(0, 2 * len(convs) - 1, 2)):
        raise LayoutError(f"this {COMPACT} is not convolution/PReLU pairs ending in 3 x scale^2 channels")
    return Layout(COMPACT, scale, features, blocks=len(convs) - 2)


def _from_old_names(state: Mapping[str, Any]) -> dict[str, Any]:
    """The original ESRGAN's keys renamed to RRDBNet's (the networks are the same): the trunk's last `sub` entry is
    conv_body; after it come the upsampling convolutions and the two final ones, in order."""
    trunk = max((int(m.group(1)) for m in map(_OLD_RDB.match, state) if m), default=-1) + 1
    convs = sorted({int(m.group(1)) for m in map(_OLD_CONV.match, state) if m and int(m.group(1)) >= 2})
    if len(convs) < 2:
        raise LayoutError(f"this {OLD_RRDB} file lacks its final convolutions (model.N after model.1)")
    names = {0: "conv_first", **{n: f"conv_up{i + 1}" for i, n in enumerate(convs[:-2])}}
    names |= {convs[-2]: "conv_hr", convs[-1]: "conv_last"}
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        rdb, conv = _OLD_RDB.match(key), _OLD_CONV.match(key)
        if rdb:
            block, dense, index, kind = rdb.groups()
            renamed[f"body.{block}.rdb{dense}.conv{index}.{kind}"] = value
        elif key in (f"model.1.sub.{trunk}.weight", f"model.1.sub.{trunk}.bias"):
            renamed[f"conv_body.{key.rsplit('.', 1)[1]}"] = value
        elif conv and int(conv.group(1)) in names:
            renamed[f"{names[int(conv.group(1))]}.{conv.group(2)}"] = value
        else:
            renamed[key] = value  # left as it is: the strict load then names it
    width = _shape(state["model.0.weight"])[0]
    if any(_shape(renamed[f"conv_up{i + 1}.weight"])[0] != width for i in range(len(convs) - 2)):
        raise LayoutError(f"this {OLD_RRDB} upsamples with pixel shuffle; aigc runs the nearest + convolution variant")
    return renamed


def _shape(value: Any) -> list[int]:
    return list(value.shape) if hasattr(value, "shape") else list(value)


# --- files ------------------------------------------------------------------------------------------------------


def read_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, without reading the weights: the safetensors header (checked to cover the file), or a
    torch file's index with its storages memory-mapped. LayoutError says why a file cannot be read."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as handle:
                return {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for damaged files
            raise LayoutError(f"it is not a readable .safetensors file ({_first_line(error)})") from None
    return {name: list(tensor.shape) for name, tensor in read_state(path).items()}


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict, unwrapped from {"params_ema": ...} and the like: safetensors, or torch.load with
    weights_only=True (never arbitrary pickles), memory-mapped where the file allows it."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = _torch_load(path)
    for key in _NESTED:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LayoutError("it holds no state dict (tensors by name, perhaps under 'params_ema' or 'params')")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _torch_load(path: Path) -> Any:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip torch file
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):  # torch's words for a class the weights-only reader refuses
            raise LayoutError("it is not a readable torch file (damaged, cut short, or not saved by torch)") from None
        raise LayoutError(
            "it is a pickle that needs code to load, and aigc loads weights only (torch.load(weights_only=True)); "
            "where you trust it, save its state dict with safetensors.torch.save_file and pass that"
        ) from None
    except Exception as error:  # noqa: BLE001 - torch raises many types on damaged or foreign files
        raise LayoutError(f"it is not a readable torch file ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0][:200] if text else "") or type(error).__name__


def build(path: Path) -> Upscaler:
    """The network a file holds, its weights loaded strictly, on the CPU in float32, in eval mode."""
    try:
        state = read_state(path)
        layout = detect({name: list(tensor.shape) for name, tensor in state.items()})
        if layout.name == OLD_RRDB:
            state = _from_old_names(state)
    except LayoutError as error:
        raise ModelLoadError(f"{path.name}: {error}.") from None
    net: nn.Module = SRVGGNetCompact(layout) if layout.name == COMPACT else RRDBNet(layout)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelLoadError(
            f"{path.name} looks like {layout.name} x{layout.scale} but does not load as one: {_first_line(error)}"
        ) from None
    return Upscaler(net, layout).eval()
