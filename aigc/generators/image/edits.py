"""The pixels around an edit (inpainting, outpainting): planned before the diffusion pipeline runs, finished after.

A1111's conventions throughout: a mask is white where the image is repainted and black where it is kept (grey
blends; an RGBA mask's alpha is not used). The mask is blurred by `mask_blur` pixels, the pipeline repaints a
canvas, and the result is composited onto the original through the blurred mask, so with `mask_blur=0` every
pixel under black is exactly the input's. `inpaint_area="masked"` (A1111's "only masked") repaints a crop
around the mask, scaled to the generation size, and pastes it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from .pictures import LARGEST_SIDE, open_image, sized

KEEP, REPAINT = 0, 255
OUTPAINT_NOISE = 24.0  # grey levels of fixed noise over an outpaint's fill: texture for the sampler to work from


@dataclass(frozen=True)
class Edit:
    """What one edit repaints and how its result goes back: shared by every image of a call."""

    original: Any  # RGB: the picture the result is composited onto (with outpainting, the grown canvas)
    blend: Any  # L, the original's size: the blurred mask, how much of the result shows at each pixel
    canvas: Any  # RGB: what the pipeline repaints, at the generation size
    mask: Any  # L, the canvas's size: where the pipeline repaints
    box: tuple[int, int, int, int] | None = None  # where the canvas came from in the original ("masked" area)

    @property
    def size(self) -> tuple[int, int]:
        return self.canvas.size


def wanted(params: dict[str, Any]) -> bool:
    """Whether these knobs ask for an edit (a mask, or outpainting) rather than plain image-to-image."""
    return params.get("mask") is not None or params.get("outpaint") is not None


def read_mask(value: Any, image_size: tuple[int, int]) -> Any:
    """The mask as L (white = repaint), checked against the init image's own size and for something to repaint."""
    mask = open_image(value, "mask", mode="L")
    if mask.size != tuple(image_size):
        raise ConfigError(
            f"mask is {mask.width}x{mask.height} but init_image is {image_size[0]}x{image_size[1]}; "
            "make the mask the image's size (white = repaint, black = keep).",
            field="mask",
        )
    if max(mask.getextrema()) < 128:
        raise ConfigError(
            "mask is black everywhere, so there is nothing to repaint; paint white where the image should change.",
            field="mask",
        )
    return mask


def plan(
    init_image: Any,
    mask: Any,
    *,
    width: int | None,
    height: int | None,
    outpaint: tuple[int, int, int, int] | None,
    blur: int,
    area: str,
    padding: int,
) -> Edit:
    """The edit these knobs describe; every check runs here, before any model loads.

    `width`/`height` scale the picture as for image-to-image, except with `area="masked"`, where (as in A1111)
    they are the size the masked crop is generated at and the picture keeps its own size.
    """
    image = open_image(init_image)
    given = read_mask(mask, image.size) if mask is not None else None
    masked = area == "masked"
    image = sized(image, None if masked else width, None if masked else height)
    if given is not None and given.size != image.size:
        given = given.resize(image.size)
    if outpaint is not None:
        image, given = grow(image, given, outpaint)
    assert given is not None  # a mask or outpainting: wanted() chose this path
    blend = soften(given, blur)
    if not masked:
        return Edit(image, blend, image, blend)
    target = (width or image.width, height or image.height)
    from diffusers.image_processor import VaeImageProcessor

    box = VaeImageProcessor.get_crop_region(blend, target[0], target[1], pad=padding)
    canvas = image.crop(box).resize(target)
    return Edit(image, blend, canvas, blend.crop(box).resize(target), box)


def grow(image: Any, mask: Any, sides: tuple[int, int, int, int]) -> tuple[Any, Any]:
    """The canvas grown by (left, top, right, bottom) pixels and its mask (the new area white, a given mask kept).

    The new area is filled with the border's colours, blurred into the distance, under fixed noise: a start that
    image-to-image can repaint, where black would show through at strengths below 1.
    """
    import numpy as np
    from PIL import Image, ImageFilter

    left, top, right, bottom = sides
    width, height = image.width + left + right, image.height + top + bottom
    if max(width, height) > LARGEST_SIDE:
        raise ConfigError(
            f"outpaint={list(sides)} grows the {image.width}x{image.height} image to {width}x{height}; images are "
            f"at most {LARGEST_SIDE} px a side, so outpaint less or pass a smaller width= and height=.",
            field="outpaint",
        )
    pixels = np.asarray(image)
    edges = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    smooth = np.asarray(Image.fromarray(edges).filter(ImageFilter.GaussianBlur(max(sides) / 4)), dtype=np.float32)
    noise = np.random.default_rng(0).normal(0.0, OUTPAINT_NOISE, smooth.shape)
    fill = np.clip(smooth + noise, 0, 255).round().astype(np.uint8)
    new = np.full((height, width), REPAINT, dtype=np.uint8)
    new[top : top + image.height, left : left + image.width] = KEEP if mask is None else np.asarray(mask)
    fill[top : top + image.height, left : left + image.width] = pixels
    return Image.fromarray(fill), Image.fromarray(new)


def soften(mask: Any, blur: int) -> Any:
    """The mask blurred by `blur` pixels (a Gaussian's radius, as A1111's mask blur), or as it is for 0."""
    from PIL import ImageFilter

    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur else mask


def finish(edit: Edit, generated: Any) -> Any:
    """The pipeline's image put back: scaled into its box ("masked" area), then blended onto the original through
    the blurred mask, so pixels under black are the original's, exactly."""
    from PIL import Image

    result = generated.convert("RGB")
    if edit.box is not None:
        left, top, right, bottom = edit.box
        pasted = edit.original.copy()
        pasted.paste(result.resize((right - left, bottom - top), Image.Resampling.LANCZOS), (left, top))
        result = pasted
    elif result.size != edit.original.size:
        result = result.resize(edit.original.size, Image.Resampling.LANCZOS)
    return Image.composite(result, edit.original, edit.blend)
