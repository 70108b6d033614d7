"""Upscaling workloads: one plain forward of the whole image (what a script calling the network writes) vs
aigc.generate(backend="upscale"), which reads the file, runs 256 px tiles with 16 px of context and saves nothing.

The networks are Real-ESRGAN's released architectures (RealESRGAN_x4plus: RRDBNet, 23 blocks of 64 features;
realesr-general-x4v3: SRVGGNetCompact, 32 convolutions) with random weights: no weights are needed to time them,
and the compute is the same as the checkpoints'. Each is saved once per process as a .safetensors file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigc.runtime.devices import DeviceManager

from .workloads import Workload

_files: dict[tuple[bool, bool], str] = {}


def _model_file(compact: bool, tiny: bool) -> str:
    """The architecture with random weights, saved once (tiny=True: the same layout, a few channels)."""
    if (compact, tiny) not in _files:
        from safetensors.torch import save_file

        from aigc.generators.image.esrgan import COMPACT, RRDB, Layout, RRDBNet, SRVGGNetCompact

        torch.manual_seed(0)
        if compact:
            net: torch.nn.Module = SRVGGNetCompact(Layout(COMPACT, 4, 8 if tiny else 64, 2 if tiny else 32))
        else:
            layout = Layout(RRDB, 4, 8 if tiny else 64, 2 if tiny else 23, growth=4 if tiny else 32, upsamples=2)
            net = RRDBNet(layout)
            with torch.no_grad():  # mid-grey plus detail (the tiny one's is faint without a push), never clamped flat
                net.conv_last.bias.fill_(0.5)
                net.conv_last.weight.mul_(30 if tiny else 1)
        path = Path(tempfile.mkdtemp(prefix="bench-upscale-")) / f"{'compact' if compact else 'x4plus'}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
        _files[(compact, tiny)] = str(path)
    return _files[(compact, tiny)]


def _picture(size: int) -> Any:
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size)[None, :, None] + np.linspace(0, 50, size)[:, None, None]
    return Image.fromarray(np.clip(ramp + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8))


def esrgan(manager: DeviceManager, size: int = 512, compact: bool = False, tiny: bool = False) -> Workload:
    """A `size` px image upscaled x4: the whole image through the module at once vs aigc's tiles.

    compare, in levels of 255: mean difference <= 1, and every pixel within 2 on the CPU in float32 (tiles differ
    from the whole image only where the 16 px of context miss part of the receptive field; measured on the CPU at
    96 px in 48 px tiles: max 1, mean 0.00 for both networks), within 32 in bfloat16/float16, where the tiles'
    convolutions may also round differently (not yet measured on a GPU).
    """
    import aigc
    from aigc.generators.image.esrgan import build

    path = _model_file(compact, tiny)
    image = _picture(size)
    net = build(Path(path)).to(manager.device, manager.dtype)

    def stock() -> Any:
        from PIL import Image

        with torch.inference_mode():
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].to(manager.device, manager.dtype) / 255
            pixels = (net(x).float().clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).cpu()
        return Image.fromarray(pixels.numpy())

    def ours() -> Any:
        return aigc.generate(
            "image", "", backend="upscale", model=path, init_image=image, manager=manager, progress=False
        )[0].data

    exact = manager.dtype == torch.float32 and manager.device.type == "cpu"

    def same(theirs: Any, mine: Any) -> bool:
        if theirs.size != mine.size:
            return False
        gap = np.abs(np.asarray(theirs, np.int16) - np.asarray(mine, np.int16))
        return bool(gap.mean() <= 1 and gap.max() <= (2 if exact else 32))

    return stock, ours, same
