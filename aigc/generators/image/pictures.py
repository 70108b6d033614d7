"""Images a request hands in (an init image, a mask, a control image): read once, bounded, sized.

Every reader goes through `open_image`, so a decompression bomb or a hostile file is one ConfigError naming the
knob, raised from the file's header before its pixels are decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import limits
from ...errors import ConfigError

LARGEST_SIDE = 2048  # pixels a side of a generated image (the width/height knobs' maximum)
LARGEST_READ = LARGEST_SIDE * 4  # pixels a side of an image read (it is scaled to the generation size)


def open_image(value: Any, name: str = "init_image", mode: str = "RGB") -> Any:
    """The image a knob names (a path or a PIL image) in `mode`; a file is read with Pillow's decompression-bomb
    guard and its size checked from its header (the megapixels limit for images read, 8192 px a side) first."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        limits.check_image(value.width, value.height, name, field=name)
        return _bounded(value, name).convert(mode)
    try:
        with Image.open(Path(value).expanduser()) as image:
            limits.check_image(image.width, image.height, f"{name}={str(value)!r}", field=name)
            return _bounded(image, name).convert(mode)
    except ConfigError:
        raise
    except Image.DecompressionBombError as error:
        raise ConfigError(f"{name}={value!r} is far too large to open ({error}).", field=name) from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise ConfigError(f"{name}={value!r} is not a readable image: {error}", field=name) from None


def _bounded(image: Any, name: str) -> Any:
    """Refuse an image larger than 8192 px a side before decoding its pixels."""
    if max(image.size) > LARGEST_READ:
        raise ConfigError(
            f"{name} is {image.width}x{image.height} pixels; at most {LARGEST_READ} a side is read (it is "
            "then scaled to width= and height=).",
            field=name,
        )
    return image


def sized(image: Any, width: int | None, height: int | None, name: str = "init_image") -> Any:
    """The image at the requested size, or at its own size rounded down to multiples of 8."""
    target = (width or image.width // 8 * 8, height or image.height // 8 * 8)
    if min(target) < 64:
        raise ConfigError(
            f"{name} is {image.width}x{image.height}; it must be at least 64x64 pixels, "
            "or pass width= and height= to scale it.",
            field=name,
        )
    if max(target) > LARGEST_SIDE:
        raise ConfigError(
            f"{name} is {image.width}x{image.height}; images are at most {LARGEST_SIDE} px a side, so pass "
            "width= and height= (it is scaled to them).",
            field=name,
        )
    return image if target == image.size else image.resize(target)
