"""Hires fix, as A1111 does it: generate at the base size, upscale, then repaint at the larger size with
image-to-image, so a model keeps the composition it knows at its native size and adds detail at the larger one.

The upscale is of the latents ("latent", bilinear, as A1111's default "Latent") or of the decoded pixels
("lanczos", or an upscaler model that backend="upscale" runs, through the same device manager). Each image keeps
its own seeded generator through both passes, so it is the same alone or in a batch.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .pictures import LARGEST_SIDE

UPSCALERS = ("latent", "lanczos")
A1111_NAMES = {"latent": "Latent", "lanczos": "Lanczos"}


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The hires pass's size: the base size times `scale`, rounded down to multiples of 8, within the size limit."""
    target = (int(width * scale) // 8 * 8, int(height * scale) // 8 * 8)
    if max(target) > LARGEST_SIDE:
        raise ConfigError(
            f"hires={scale:g} makes the {width}x{height} image {target[0]}x{target[1]}; images are at most "
            f"{LARGEST_SIDE} px a side, so lower hires or the base width= and height=.",
            field="hires",
        )
    return target


def base_size(first: Any, vae_scale_factor: int) -> tuple[int, int]:
    """The first pass's size in pixels, from its latents (a tensor) or its images."""
    if hasattr(first, "shape"):
        return first.shape[-1] * vae_scale_factor, first.shape[-2] * vae_scale_factor
    return first[0].size


def upscaled(first: Any, size: tuple[int, int], upscaler: str, vae_scale_factor: int, model: Any = None) -> Any:
    """The second pass's start: latents scaled bilinearly, or each image scaled by `model` (an upscaler: image and
    factor in, image out) and then to the size exactly with Lanczos."""
    if upscaler == "latent":
        import torch.nn.functional as F

        width, height = size
        return F.interpolate(first, size=(height // vae_scale_factor, width // vae_scale_factor), mode="bilinear")
    from PIL import Image

    if model is not None:
        first = [model(image, size[0] / image.width) for image in first]
    return [image if image.size == size else image.resize(size, Image.Resampling.LANCZOS) for image in first]
