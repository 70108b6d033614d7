"""Editing workloads on SD 1.5's architecture (random weights, as in sd.py): sd-inpainting with a mask, and a
canny ControlNet, each as a diffusers user writes it vs aigc.generate with the same seeds.

What is compared: inpainting, the pixels under the mask (aigc composites the result onto the input, so the rest is
the input's own, exactly, where the stock pipeline's VAE round trip changes it); ControlNet, every pixel (aigc makes
the canny map with the same OpenCV call a diffusers user makes it with).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aigc.runtime.devices import DeviceManager

from .sd import PROMPT, _sd15_dir
from .workloads import Workload


def _picture(size: int) -> Any:
    from PIL import Image

    gradient = np.linspace(0, 255, size, dtype=np.uint8)
    pixels = np.stack([np.tile(gradient, (size, 1)), np.tile(gradient[:, None], (1, size)), np.full((size, size), 90)])
    return Image.fromarray(pixels.transpose(1, 2, 0).astype(np.uint8))


def _mask(size: int) -> Any:
    from PIL import Image

    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, size * 3 // 4, size * 3 // 4))
    return mask


def _close(theirs: list[Any], mine: list[Any], where: Any, exact: bool) -> bool:
    """Every image within 1 level (fp32 on a CPU) or 32 levels and a mean of 2, over `where` (a boolean mask)."""
    max_levels, mean_levels = (1, 1.0) if exact else (32, 2.0)
    if len(theirs) != len(mine):
        return False
    for a, b in zip(theirs, mine, strict=True):
        gap = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))[where]
        if gap.max() > max_levels or gap.mean() > mean_levels:
            return False
    return True


def inpaint(manager: DeviceManager, batch: int, steps: int, size: int = 512, tiny: bool = False) -> Workload:
    """sd-inpainting (9-channel UNet), `batch` images of one prompt repainting the middle of a picture."""
    from diffusers import StableDiffusionInpaintPipeline

    import aigc

    path = _sd15_dir(manager.dtype, tiny, inpainting=True)
    picture, mask = _picture(size), _mask(size)
    seeds = list(range(batch))
    pipe = StableDiffusionInpaintPipeline.from_pretrained(path, dtype=manager.dtype, safety_checker=None)
    pipe = pipe.to(manager.device)
    pipe.set_progress_bar_config(disable=True)

    def stock() -> list[Any]:
        generators = [torch.Generator(manager.device).manual_seed(s) for s in seeds]
        # one image and mask per seed: with one image for num_images_per_prompt=n, diffusers samples the masked
        # image's latents with the first generator only, so image i would not be seed i's own
        return pipe(
            [PROMPT] * batch,
            image=[picture] * batch,
            mask_image=[mask] * batch,
            num_inference_steps=steps,
            height=size,
            width=size,
            generator=generators,
            strength=0.8,
        ).images

    def ours() -> list[Any]:
        knobs = {"init_image": picture, "mask": mask, "mask_blur": 0, "steps": steps, "strength": 0.8}
        return [
            a.data for a in aigc.generate("image", PROMPT, model=path, n=batch, seed=seeds, manager=manager, **knobs)
        ]

    under = np.asarray(mask) > 0
    exact = manager.dtype == torch.float32 and manager.device.type == "cpu"
    return stock, ours, lambda theirs, mine: _close(theirs, mine, under, exact)


def controlnet_canny(manager: DeviceManager, batch: int, steps: int, size: int = 512, tiny: bool = False) -> Workload:
    """SD 1.5 with a canny ControlNet (made from its UNet: the full-size ControlNet's shape), the map from OpenCV."""
    import cv2
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    import aigc

    path = _sd15_dir(manager.dtype, tiny)
    net_path = _controlnet_dir(path, manager.dtype, tiny)
    picture, seeds = _picture(size), list(range(batch))
    controlnet = ControlNetModel.from_pretrained(net_path, dtype=manager.dtype)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        path, controlnet=controlnet, dtype=manager.dtype, safety_checker=None
    ).to(manager.device)
    pipe.set_progress_bar_config(disable=True)

    def stock() -> list[Any]:
        edges = cv2.Canny(np.asarray(picture), 100, 200)  # what the diffusers docs do
        control = Image.fromarray(np.stack([edges] * 3, axis=-1))
        generators = [torch.Generator(manager.device).manual_seed(s) for s in seeds]
        return pipe(
            PROMPT,
            image=control,
            num_inference_steps=steps,
            height=size,
            width=size,
            num_images_per_prompt=batch,
            generator=generators,
        ).images

    def ours() -> list[Any]:
        control = [{"model": net_path, "image": picture, "preprocess": "canny"}]
        knobs = {"steps": steps, "width": size, "height": size, "control": control}
        return [
            a.data for a in aigc.generate("image", PROMPT, model=path, n=batch, seed=seeds, manager=manager, **knobs)
        ]

    exact = manager.dtype == torch.float32 and manager.device.type == "cpu"
    return stock, ours, lambda theirs, mine: _close(theirs, mine, np.ones((size, size), bool), exact)


_controlnets: dict[str, str] = {}


def _controlnet_dir(sd_path: str, dtype: torch.dtype, tiny: bool) -> str:
    """A ControlNet made from the pipeline's UNet with its zero convolutions randomised (so it steers), saved once."""
    import tempfile

    from diffusers import ControlNetModel, UNet2DConditionModel

    if sd_path not in _controlnets:
        unet = UNet2DConditionModel.from_pretrained(sd_path, subfolder="unet")
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, weight in net.named_parameters():
                if name.startswith(
                    ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
                ):
                    weight.copy_(torch.randn(weight.shape, generator=generator) * 0.02)
        path = tempfile.mkdtemp(prefix="bench-controlnet-tiny-" if tiny else "bench-controlnet-")
        net.to(dtype).save_pretrained(path)
        _controlnets[sd_path] = path
    return _controlnets[sd_path]
